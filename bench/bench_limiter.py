"""Rate limiter hot path: ns per ``try_acquire`` against a hand-written floor and peers.

``python -m bench limiter`` (or ``make bench BENCH=limiter``). Every row runs in
this process on the same machine, so the ratios are what to compare, not the ns.

Scenarios, identical for every row:

- allow: the bucket never runs dry (10**9 requests per second), every call admitted;
- reject: one request per day, spent before timing, every call refused.

Peers: limits (fixed and moving window on MemoryStorage, ``hit``), pyrate-limiter
(InMemoryBucket, non-blocking ``try_acquire``), token-bucket (MemoryStorage,
``consume``). They are set up for the same scenarios, not tuned further.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import partial, wraps
from itertools import cycle
from time import monotonic, time
from typing import Any

from bench._harness import Row, Table, per_call_ns, print_tables
from resilience.events import RateLimitRejected, bus
from resilience.rate_limiter import (
    KeyedRateLimiter,
    RateLimitConfig,
    RateLimiter,
    rate_limit,
    rate_limiter_registry,
)

ALLOW_PER_SECOND = 10**9
DAY = 86_400
KEYS = 1_000


class BareBucket:
    """Lock, ``time.monotonic`` and the arithmetic, and nothing else.

    Weaker than the contract (no counters, no rejection event): shown for reference,
    not the baseline. Float-only arithmetic (CPython specialises it) and no writes
    on refusal.
    """

    __slots__ = ("_capacity", "_last", "_level", "_lock", "_rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._level = float(capacity)
        self._last = monotonic()

    def try_acquire(self) -> bool:
        with self._lock:
            now = monotonic()
            level = self._level + (now - self._last) * self._rate
            if level < 1.0:
                return False
            capacity = self._capacity
            self._level = (capacity if level > capacity else level) - 1.0
            self._last = now
            return True


class FloorBucket:
    """The honest floor: the least hand-written code with our limiter's contract.

    Thread-safe (a lock around the read-modify-write; ``with``, as ours: a bare
    ``acquire()``/``try`` is cheaper but a KeyboardInterrupt between the two leaves
    the lock held), ``allowed``/``rejected`` counted, and a refusal asks the bus
    whether anyone wants a ``RateLimitRejected`` (the one set lookup the event
    contract needs; nobody listens here, so nothing is built). No validation, no
    ``tokens`` argument and ``time.monotonic`` as a global, not an injected clock.
    """

    __slots__ = ("_capacity", "_last", "_level", "_lock", "_rate", "allowed", "rejected")

    def __init__(self, rate: float, capacity: float) -> None:
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._level = float(capacity)
        self._last = monotonic()
        self.allowed = 0
        self.rejected = 0

    def try_acquire(self) -> bool:
        with self._lock:
            now = monotonic()
            level = self._level + (now - self._last) * self._rate
            if level >= 1.0:
                capacity = self._capacity
                self._level = (capacity if level > capacity else level) - 1.0
                self._last = now
                self.allowed += 1
                return True
            self.rejected += 1
        if RateLimitRejected in bus._wanted:
            retry_after = (1.0 - level) / self._rate
            bus.publish(RateLimitRejected(name="", time=time(), tokens=1, retry_after=retry_after))
        return False


class BareKeyed:
    """Bare floor per key: a ``[level, last]`` in an unbounded dict, uncounted.

    Weaker than the contract (memory grows with every new key, no per-key or total
    counters): shown for reference, not the baseline.
    """

    __slots__ = ("_buckets", "_capacity", "_lock", "_rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._buckets: dict[Hashable, list[float]] = {}

    def try_acquire(self, key: Hashable) -> bool:
        with self._lock:
            now = monotonic()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [self._capacity, now]
            level = bucket[0] + (now - bucket[1]) * self._rate
            if level < 1.0:
                return False
            capacity = self._capacity
            bucket[0] = (capacity if level > capacity else level) - 1.0
            bucket[1] = now
            return True


class FloorKeyed:
    """The honest floor per key: ``FloorBucket``'s contract on a bounded LRU map.

    At most ``max_keys`` buckets (the least recently used is evicted: an
    ``OrderedDict``, ``move_to_end``), each counting its own allowed and
    rejected (the busiest keys), plus the totals.
    """

    __slots__ = ("_buckets", "_capacity", "_lock", "_rate", "allowed", "max_keys", "rejected")

    def __init__(self, rate: float, capacity: float, max_keys: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()
        self.max_keys = max_keys
        self.allowed = 0
        self.rejected = 0

    def try_acquire(self, key: Hashable) -> bool:
        buckets = self._buckets
        with self._lock:
            now = monotonic()
            try:  # cheaper than get() + move_to_end() for a known key
                buckets.move_to_end(key)
                bucket = buckets[key]
            except KeyError:
                if len(buckets) >= self.max_keys:
                    buckets.popitem(last=False)
                bucket = buckets[key] = [0, 0, self._capacity, now]
            level = bucket[2] + (now - bucket[3]) * self._rate
            if level >= 1.0:
                capacity = self._capacity
                bucket[2] = (capacity if level > capacity else level) - 1.0
                bucket[3] = now
                bucket[1] += 1
                self.allowed += 1
                return True
            bucket[0] += 1
            self.rejected += 1
        if RateLimitRejected in bus._wanted:
            retry_after = (1.0 - level) / self._rate
            event = RateLimitRejected(
                name="", time=time(), tokens=1, retry_after=retry_after, key=str(key)
            )
            bus.publish(event)
        return False


def _contenders(per_second: int, window: int) -> list[tuple[str, Callable[[], object], str]]:
    """(label, zero-argument call, note) for each limiter at ``per_second``/``window`` s.

    Every call goes through a ``partial`` so each row pays the same call overhead.
    """
    import limits
    import pyrate_limiter
    import token_bucket
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    rate = per_second / window
    bare = BareBucket(rate, per_second)
    floor = FloorBucket(rate, per_second)
    ours = RateLimiter(RateLimitConfig(max_requests=per_second, time_window=window))
    item = limits.RateLimitItemPerSecond(per_second, window)
    fixed = FixedWindowRateLimiter(MemoryStorage())
    moving = MovingWindowRateLimiter(MemoryStorage())
    pyrate = pyrate_limiter.Limiter(
        pyrate_limiter.InMemoryBucket([pyrate_limiter.Rate(per_second, window * 1000)])
    )
    tb = token_bucket.Limiter(rate, per_second, token_bucket.MemoryStorage())
    return [
        ("floor", partial(floor.try_acquire), "honest: lock, monotonic, counted, event check"),
        ("bare floor", partial(bare.try_acquire), "lock + monotonic + arithmetic only"),
        ("ours", partial(ours.try_acquire), "RateLimiter.try_acquire()"),
        ("limits fixed window", partial(fixed.hit, item, "bench"), "MemoryStorage, hit"),
        ("limits moving window", partial(moving.hit, item, "bench"), "MemoryStorage, hit"),
        (
            "pyrate-limiter",
            partial(pyrate.try_acquire, "bench", blocking=False),
            "InMemoryBucket, try_acquire",
        ),
        ("token-bucket", partial(tb.consume, b"bench"), "MemoryStorage, consume"),
    ]


def _table(title: str, per_second: int, window: int, *, admitted: bool) -> Table:
    rows = []
    for label, call, note in _contenders(per_second, window):
        # The reject scenario starts from an empty bucket; check each row really
        # measures what its title says.
        if not admitted:
            call()
        if bool(call()) is not admitted:
            raise RuntimeError(f"{label}: expected {'allow' if admitted else 'reject'}")
        rows.append(Row(label, per_call_ns(call), note))
    return Table(title, "ns/call", "floor", rows)


def _keyed_table() -> Table:
    """Per-key path, 1,000 keys round robin: honest and bare floors vs ours, plain and decorated."""
    config = RateLimitConfig(max_requests=ALLOW_PER_SECOND, time_window=1)
    floor = FloorKeyed(config.rate, config.capacity)
    bare = BareKeyed(config.rate, config.capacity)
    keyed = KeyedRateLimiter(config)

    def handler(user: str) -> str:
        return user

    def by_user(user: str) -> str:
        return user

    def floor_rate_limit(fn: Callable[..., Any]) -> Callable[..., Any]:
        # The least a generic keyed decorator does: pick the key, check, call.
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not floor.try_acquire(by_user(*args, **kwargs)):
                raise RuntimeError("refused")
            return fn(*args, **kwargs)

        return wrapper

    floor_decorated = floor_rate_limit(handler)
    decorated = rate_limit(config, key=by_user, name="bench.keyed")(handler)
    keys = [f"user-{i}" for i in range(KEYS)]
    calls: list[tuple[str, Callable[[str], Any], str]] = [
        ("floor", floor.try_acquire, "honest: LRU-bounded, counted per key"),
        ("bare floor + dict", bare.try_acquire, "unbounded dict, uncounted"),
        ("ours", keyed.try_acquire, "KeyedRateLimiter.try_acquire(key), LRU"),
        ("floor, decorated", floor_decorated, "hand-written generic wrapper"),
        ("ours, decorated", decorated, "@rate_limit(config, key=...)"),
    ]
    rows = []
    for label, call, note in calls:
        rows.append(Row(label, per_call_ns(_round_robin(call, keys)), note))
    rate_limiter_registry.remove("bench.keyed")
    return Table(f"keyed allow, {KEYS:,} keys round robin", "ns/call", "floor", rows)


def _round_robin(call: Callable[[str], object], keys: list[str]) -> Callable[[], object]:
    next_key = cycle(keys).__next__

    def run() -> object:
        return call(next_key())

    return run


def tables() -> list[Table]:
    return [
        _table("try_acquire (allow)", ALLOW_PER_SECOND, 1, admitted=True),
        _table("try_acquire (reject)", 1, DAY, admitted=False),
        _keyed_table(),
    ]


if __name__ == "__main__":
    print_tables(tables())
