"""A token bucket per key (per user, per endpoint...), in bounded memory.

Private: import :class:`KeyedRateLimiter` from :mod:`resilience.rate_limiter`.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from datetime import timedelta
from functools import partial
from operator import itemgetter
from typing import Any, ClassVar

from resilience._validate import non_negative_int, positive_int
from resilience.errors import ConfigTypeError, RateLimitError
from resilience.events import RateLimitRejected, bus
from resilience.rate_limiter._core import (
    MIN_SLEEP,
    ONE,
    RateLimitConfig,
    await_for,
    check_name,
    check_timeout,
    check_tokens,
    publish_rejection,
    rate_limiter_registry,
    rejection,
    wait_for,
)

__all__ = ["KeyedRateLimiter"]

# A bucket is a list [rejected, allowed, level, last]: counters first, so that
# lists compare by rejected, then allowed ("busiest keys") with no key function.
_BUSIEST = itemgetter(1)


class KeyedRateLimiter:
    """Independent token buckets, one per key, all with the same ``config``.

    Buckets live in an LRU map of at most ``max_keys`` entries. A new key at the
    cap evicts the least recently used bucket. Evicting a bucket that has refilled
    to full loses nothing (a new bucket starts full); evicting one that has not
    lets that key start over with a full bucket, and is counted in
    ``evictions_not_full`` (raise ``max_keys`` if it grows). An evicted key's own
    counters go with it; the totals ``allowed`` and ``rejected`` keep counting.

    Args:
        config: capacity and refill rate of each bucket.
        name: shown by the API and dashboard; a named limiter registers itself.
        max_keys: buckets kept at most (int >= 1).
        clock, sleep, async_sleep, register: as for :class:`RateLimiter`.

    Raises:
        ConfigTypeError, ConfigValueError: bad config, name or ``max_keys``, or a
            name that is already registered.
    """

    __slots__ = (
        "_async_sleep",
        "_buckets",
        "_capacity",
        "_clock",
        "_lock",
        "_rate",
        "_sleep",
        "allowed",
        "config",
        "evictions",
        "evictions_not_full",
        "max_keys",
        "name",
        "rejected",
    )

    # As RateLimiter._reserves: waiters reserve in this object's buckets, unless a
    # subclass keeps them elsewhere (overrides _take).
    _reserves: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._reserves = cls._take is KeyedRateLimiter._take

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        name: str | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        register: bool = True,
    ) -> None:
        if not isinstance(config, RateLimitConfig):
            raise ConfigTypeError(f"config must be a RateLimitConfig, got {config!r}")
        self.config = config
        self.name = check_name(name)
        self.max_keys = positive_int("max_keys", max_keys)
        self.allowed = 0
        self.rejected = 0
        self.evictions = 0
        self.evictions_not_full = 0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._rate = config.rate
        self._capacity = float(config.capacity)
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()
        if name is not None and register:
            rate_limiter_registry.add(name, self)

    def __repr__(self) -> str:
        return (
            f"<KeyedRateLimiter {self.name!r} keys={len(self._buckets)} "
            f"capacity={self.config.capacity} rate={self._rate:g}/s>"
        )

    @property
    def key_count(self) -> int:
        """Buckets held now (no ``__len__``: an empty limiter must not be falsy)."""
        return len(self._buckets)

    def try_acquire(self, key: Hashable, tokens: int = 1) -> bool:
        """Take ``tokens`` from ``key``'s bucket now if it has them; never waits.

        Returns:
            True if admitted, False if refused.

        Raises:
            TypeError: ``key`` is not hashable.
            ConfigTypeError, ConfigValueError: bad ``tokens``.
        """
        if tokens is not ONE:
            return self._try_acquire_many(key, tokens)
        # Locals: `self._clock()` (a callable in a slot) is a call CPython 3.11 cannot
        # specialise, and the map is read twice.
        clock = self._clock
        buckets = self._buckets
        with self._lock:
            now = clock()
            # Known key: one C call marks it most recent (cheaper than get() and then
            # move_to_end()); a new key pays for the KeyError instead.
            try:
                buckets.move_to_end(key)
                bucket = buckets[key]
            except KeyError:
                bucket = self._new_bucket(key, now)
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
            publish_rejection(self.name, 1, (1.0 - level) / self._rate, key)
        return False

    def _try_acquire_many(self, key: Hashable, tokens: object) -> bool:
        count = check_tokens(tokens, self.config.capacity)
        wait = self._take(key, count)
        if wait:
            self._refuse(key, count, wait)
            return False
        return True

    def acquire(
        self, key: Hashable, tokens: int = 1, timeout: float | timedelta | None = None
    ) -> None:
        """Take ``tokens`` from ``key``'s bucket, sleeping until they refill.

        Waiters on one key are first come, first served (see ``RateLimiter.acquire``).

        Raises:
            RateLimitError: not possible within ``timeout`` (``None``: no limit,
                ``0``: do not wait); carries ``retry_after`` and ``name``.
        """
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)
        if self._reserves:
            wait, bucket = self._reserve(key, count, limit)
            if wait:
                try:
                    self._sleep(max(wait, MIN_SLEEP))
                except BaseException:
                    self._give_back(key, bucket, count)
                    raise
            return
        wait_for(
            partial(self._take, key, count),
            self._clock,
            self._sleep,
            limit,
            partial(self._refuse, key, count),
        )

    # ASYNC109: `timeout` is the contract's name, mirroring acquire(); it raises
    # RateLimitError as soon as the wait would overrun, which asyncio.timeout cannot.
    async def aacquire(
        self,
        key: Hashable,
        tokens: int = 1,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
    ) -> None:
        """:meth:`acquire` for coroutines: waits with the injected ``async_sleep``."""
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)
        if self._reserves:
            wait, bucket = self._reserve(key, count, limit)
            if wait:
                try:
                    await self._async_sleep(max(wait, MIN_SLEEP))
                except BaseException:
                    self._give_back(key, bucket, count)
                    raise
            return
        await await_for(
            partial(self._take, key, count),
            self._clock,
            self._async_sleep,
            limit,
            partial(self._refuse, key, count),
        )

    def available_tokens(self, key: Hashable) -> float:
        """Tokens in ``key``'s bucket now (a key never seen has a full bucket)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return self._capacity
            level = bucket[2] + (self._clock() - bucket[3]) * self._rate
        return max(min(level, self._capacity), 0.0)

    def retry_after(self, key: Hashable, tokens: int = 1) -> float:
        """Seconds until ``key`` has ``tokens``; 0.0 if it has them now."""
        count = check_tokens(tokens, self.config.capacity)
        level = self.available_tokens(key)
        return 0.0 if level >= count else (count - level) / self._rate

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        """State for the API and dashboard, with the ``top`` busiest keys.

        Busiest means most rejected, then most allowed, among the keys held now.
        ``available_tokens`` is None (it is per key: see ``busiest_keys``).
        """
        non_negative_int("top", top)
        with self._lock:
            now = self._clock()
            keys = len(self._buckets)
            busiest = [
                (key, bucket.copy())
                for key, bucket in heapq.nlargest(top, self._buckets.items(), key=_BUSIEST)
            ]
        rate, capacity = self._rate, self._capacity
        return {
            "name": self.name,
            "kind": "keyed",
            **self.config.describe(),
            "available_tokens": None,
            "keys": keys,
            "max_keys": self.max_keys,
            "evictions": self.evictions,
            "evictions_not_full": self.evictions_not_full,
            "allowed": self.allowed,
            "rejected": self.rejected,
            "busiest_keys": [
                {
                    "key": str(key),
                    "allowed": int(bucket[1]),
                    "rejected": int(bucket[0]),
                    "available_tokens": min(bucket[2] + (now - bucket[3]) * rate, capacity),
                }
                for key, bucket in busiest
            ],
        }

    def _new_bucket(self, key: Hashable, now: float) -> list[float]:
        """Add a full bucket for ``key``, evicting the least recently used at the cap."""
        buckets = self._buckets
        if len(buckets) >= self.max_keys:
            _, old = buckets.popitem(last=False)
            self.evictions += 1
            if old[2] + (now - old[3]) * self._rate < self._capacity:
                self.evictions_not_full += 1
        bucket = [0, 0, self._capacity, now]
        buckets[key] = bucket
        return bucket

    def _take(self, key: Hashable, count: int) -> float:
        """Take ``count`` tokens from ``key`` and return 0.0, or the seconds they need."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._new_bucket(key, now)
            else:
                self._buckets.move_to_end(key)
            level = bucket[2] + (now - bucket[3]) * self._rate
            if level >= count:
                capacity = self._capacity
                bucket[2] = (capacity if level > capacity else level) - count
                bucket[3] = now
                bucket[1] += 1
                self.allowed += 1
                return 0.0
        return (count - level) / self._rate

    def _reserve(self, key: Hashable, count: int, limit: float | None) -> tuple[float, list[float]]:
        """``RateLimiter._reserve`` for ``key``'s bucket; also returns that bucket."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._new_bucket(key, now)
            else:
                self._buckets.move_to_end(key)
            level = min(bucket[2] + (now - bucket[3]) * self._rate, self._capacity)
            wait = 0.0 if level >= count else (count - level) / self._rate
            if limit is None or wait <= limit:
                bucket[2] = level - count
                bucket[3] = now
                bucket[1] += 1
                self.allowed += 1
                return wait, bucket
        raise self._refuse(key, count, wait)

    def _give_back(self, key: Hashable, reserved: list[float], count: int) -> None:
        with self._lock:
            self.allowed -= 1
            bucket = self._buckets.get(key)
            # Evicted meanwhile (perhaps back with a new, full bucket): the debt went
            # with the old bucket, so there is nothing to give back to the current one.
            if bucket is not reserved:
                return
            now = self._clock()
            level = bucket[2] + (now - bucket[3]) * self._rate + count
            bucket[2] = min(level, self._capacity)
            bucket[3] = now
            bucket[1] -= 1

    def _refuse(self, key: Hashable, count: int, wait: float) -> RateLimitError:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket[0] += 1
            self.rejected += 1
        if RateLimitRejected in bus._wanted:
            publish_rejection(self.name, count, wait, key)
        return rejection(self.name, count, wait, key)
