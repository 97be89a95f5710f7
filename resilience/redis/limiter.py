"""Token-bucket rate limiters whose buckets live in Redis, shared by every process.

Same API as :class:`resilience.rate_limiter.RateLimiter` and
:class:`~resilience.rate_limiter.KeyedRateLimiter` (they subclass them, so the
registry, API, dashboard and metrics see them as limiters); the keyed one lives in
:mod:`resilience.redis.keyed_limiter` and is re-exported here. Each check is one
EVALSHA of :data:`resilience.redis.scripts.TOKEN_BUCKET`, atomic, timed by Redis
``TIME``. When Redis cannot answer, a limiter admits (``fail_open=True``, the
default) or refuses every request, counts it, and logs a warning at most once a
minute; it uses Redis again by itself once Redis answers.

Async: ``aacquire``/``atry_acquire`` run the round trip in a worker thread
(``asyncio.to_thread``) rather than on a ``redis.asyncio`` client. A limiter is a
process-wide object shared through the registry by sync and async code and by
several event loops (daphne, tests), while a ``redis.asyncio`` connection belongs to
the loop that opened it; the thread reuses the one pooled sync client and its outage
handling, for the cost of a thread hop (tens of µs) on top of the round trip.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import redis

from resilience._validate import duration
from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError
from resilience.rate_limiter import RateLimiter
from resilience.rate_limiter._core import (
    ONE,
    RateLimitConfig,
    check_timeout,
    check_tokens,
    rate_limiter_registry,
)
from resilience.redis._bucket import DEFAULT_PREFIX, Bucket, await_tokens
from resilience.redis._bucket import encode_key as encode_key  # tests import it from here
from resilience.redis.keyed_limiter import RedisKeyedRateLimiter

__all__ = ["RedisKeyedRateLimiter", "RedisRateLimiter"]

# Incremented in a forked child: tokens leased before the fork belong to the parent.
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class RedisRateLimiter(RateLimiter):
    """A :class:`~resilience.rate_limiter.RateLimiter` whose one bucket lives in Redis.

    Every process using the same ``name`` (and ``key_prefix``) on the same Redis
    shares the bucket. ``allowed``/``rejected`` count this process's requests.

    Args:
        config: capacity and refill rate.
        name: required: names the Redis key (``{key_prefix}{{name}}``); must not
            contain braces. Registers in ``rate_limiter_registry`` unless
            ``register=False``.
        redis: a ``redis.Redis`` client; default :func:`resilience.redis.default_client`
            (``REDIS_URL``). Nothing connects until the first check.
        key_prefix: prefix of the Redis keys.
        fail_open: with Redis unavailable, admit every request (True) or refuse
            every request (False, ``retry_after`` = ``retry_interval``).
        retry_interval: seconds without trying Redis after it failed.
        clock, sleep, async_sleep, register: as for ``RateLimiter``; ``clock`` only
            times waits and back-off, the bucket is timed by Redis ``TIME``.
        time_source: tests only: epoch seconds to use instead of Redis ``TIME``.
        lease: opt-in local lease mode (0, the default, is off): a check that finds no
            token held locally takes up to ``lease`` tokens from the shared bucket in
            one round trip (at least the ones it needs, or nothing), and the next checks
            are served from them in memory. See "Lease mode" below.
        lease_ttl: seconds (by ``clock``) after which tokens leased and not yet used
            are dropped (never returned: that would be a second round trip), so an idle
            process does not sit on them; default 1 s.

    Lease mode: one round trip per ``lease`` admissions instead of one per check.
    Tokens are taken from the shared bucket before they are handed out, so every
    admission is backed by a token of the bucket; what changes is *when* a token is
    used. A process holds at most ``lease - 1`` unused tokens after a check, so over
    any interval the processes together admit at most ``lease × processes`` more than
    the exact limiter would (tokens leased before the interval and used in it); a
    leased token that is never used is an admission lost, never one gained. A refused
    check costs one round trip, as in the exact mode. Keep ``lease`` small next to
    ``capacity`` (each process can hold ``lease - 1`` tokens the others cannot get).
    Processes in either mode can share one bucket.

    Raises:
        ConfigTypeError, ConfigValueError: bad arguments, or ``name`` taken.
    """

    __slots__ = (
        "_bucket",
        "_lease",
        "_lease_expires",
        "_lease_fork",
        "_lease_lock",
        "_lease_ttl",
        "_leased",
        "_redis_key",
    )

    blocking_io = True
    """Every check is a Redis round trip: async callers should await ``atry_acquire``."""

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        name: str,
        redis: redis.Redis | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        fail_open: bool = True,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        register: bool = True,
        time_source: Callable[[], float] | None = None,
        lease: int = 0,
        lease_ttl: float | timedelta = 1.0,
    ) -> None:
        super().__init__(
            config, name=name, clock=clock, sleep=sleep, async_sleep=async_sleep, register=False
        )
        if isinstance(lease, bool) or not isinstance(lease, int):
            raise ConfigTypeError(f"lease must be an int, got {lease!r}")
        if not 0 <= lease <= config.capacity:
            raise ConfigValueError(
                f"lease must be between 0 (off) and capacity ({config.capacity}), got {lease!r}"
            )
        self._lease = lease
        self._lease_ttl = duration("lease_ttl", lease_ttl, allow_zero=False)
        self._leased = 0
        self._lease_expires = 0.0
        self._lease_fork = _forks[0]
        # Held across the reservation's round trip: one thread reserves at a time, so a
        # process never holds more than one batch (the others wait for it, then use it).
        self._lease_lock = threading.Lock()
        self._bucket = Bucket(
            config,
            kind="rate limiter",
            name=name,
            client=redis,
            key_prefix=key_prefix,
            fail_open=fail_open,
            retry_interval=retry_interval,
            clock=clock,
            time_source=time_source,
        )
        self._redis_key = self._bucket.prefix
        if register:
            rate_limiter_registry.add(name, self)

    def __repr__(self) -> str:
        return (
            f"<RedisRateLimiter {self.name!r} key={self._redis_key!r} "
            f"capacity={self.config.capacity} rate={self._rate:g}/s>"
        )

    def try_acquire(self, tokens: int = 1) -> bool:
        """Take ``tokens`` now if the shared bucket has them: one Redis round trip.

        Returns:
            True if admitted (or Redis is down and ``fail_open``), else False.

        Raises:
            ConfigTypeError, ConfigValueError: bad ``tokens``.
        """
        count = 1 if tokens is ONE else check_tokens(tokens, self.config.capacity)
        wait = self._take(count)
        if wait:
            self._refuse(count, wait)
            return False
        return True

    async def atry_acquire(self, tokens: int = 1) -> bool:
        """:meth:`try_acquire` for coroutines (the round trip runs in a thread; a check
        served from leased tokens runs on the loop)."""
        if self._lease:
            count = 1 if tokens is ONE else check_tokens(tokens, self.config.capacity)
            if self._take_leased(count):
                return True
        return await asyncio.to_thread(self.try_acquire, tokens)

    # ASYNC109: `timeout` is the contract's name (see RateLimiter.aacquire).
    async def aacquire(
        self,
        tokens: int = 1,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
    ) -> None:
        """:meth:`acquire` for coroutines; each attempt runs in a worker thread."""
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)

        def take() -> float:
            return self._take(count)

        def refuse(wait: float) -> RateLimitError:
            return self._refuse(count, wait)

        await await_tokens(take, self._clock, self._async_sleep, limit, refuse)

    def available_tokens(self) -> float:
        """Tokens in the shared bucket now (one round trip, nothing taken)."""
        return self._bucket.level(self._redis_key)

    def retry_after(self, tokens: int = 1) -> float:
        """Seconds until ``tokens`` are available; 0.0 if they are available now."""
        count = check_tokens(tokens, self.config.capacity)
        with self._lock:
            if self._held() >= count:
                return 0.0
        level = self.available_tokens()
        return 0.0 if level >= count else (count - level) / self._rate

    def snapshot(self) -> dict[str, Any]:
        """As ``RateLimiter.snapshot`` plus the backend's health and fallback counters
        (and ``lease``, ``leased_tokens``: the batch size and the tokens held now)."""
        with self._lock:
            leased = self._held()
        lease = {"lease": self._lease, "leased_tokens": leased}
        return {**super().snapshot(), **self._bucket.describe(), **lease}

    def _take(self, count: int) -> float:
        if self._lease:
            return 0.0 if self._take_leased(count) else self._lease_batch(count)
        wait = self._bucket.take(self._redis_key, count)
        if not wait:
            with self._lock:
                self.allowed += 1
        return wait

    def _held(self) -> int:
        """Leased tokens this process may use now (call with ``_lock`` held): none once
        ``lease_ttl`` is over, and none in a child forked while they were held (they are
        the parent's: both using them would break the ``lease × processes`` bound)."""
        if self._lease_fork != _forks[0]:
            self._leased = 0
            self._lease_fork = _forks[0]
            # A thread of the parent may have held it across fork(): no one will release it.
            self._lease_lock = threading.Lock()
        if self._leased and self._clock() >= self._lease_expires:
            self._leased = 0
        return self._leased

    def _take_leased(self, count: int) -> bool:
        """Admit from the tokens held locally, if there are enough (no I/O)."""
        with self._lock:
            if self._held() >= count:
                self._leased -= count
                self.allowed += 1
                return True
        return False

    def _lease_batch(self, count: int) -> float:
        """Lease a batch (one round trip) and admit from it: 0.0, or the wait."""
        with self._lock:
            self._held()  # after a fork: a fresh _lease_lock before it is taken
        with self._lease_lock:
            with self._lock:  # claim what is held, so no other thread spends it meanwhile
                held = self._held()
                if held >= count:
                    self._leased = held - count
                    self.allowed += 1
                    return 0.0
                self._leased = 0
            need = count - held
            result = self._bucket.reserve(self._redis_key, need, max(self._lease, count) - held)
            if result is None:
                with self._lock:
                    self._leased += held
                if self._bucket.fail_open:
                    self._bucket.fallback_admitted += 1
                    with self._lock:
                        self.allowed += 1
                    return 0.0
                self._bucket.fallback_rejected += 1
                return self._bucket.backend.retry_interval
            taken, level = result
            with self._lock:
                if taken < need:  # refused: nothing was taken
                    self._leased += held
                    return (need - level) / self._rate
                self._leased += held + taken - count
                self._lease_expires = self._clock() + self._lease_ttl
                self.allowed += 1
                return 0.0
