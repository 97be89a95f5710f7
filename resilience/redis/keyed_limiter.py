"""Token-bucket rate limiters whose buckets live in Redis, one a key of the caller's.

:class:`RedisKeyedRateLimiter` is to :class:`~resilience.rate_limiter.KeyedRateLimiter`
what :class:`~resilience.redis.RedisRateLimiter` is to ``RateLimiter`` (see
:mod:`resilience.redis.limiter` for the outage behaviour and the async design): each
check is one EVALSHA of :data:`resilience.redis.scripts.TOKEN_BUCKET` on the key's
own bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import timedelta
from typing import Any

import redis

from resilience.errors import RateLimitError
from resilience.rate_limiter._core import (
    ONE,
    RateLimitConfig,
    check_timeout,
    check_tokens,
    rate_limiter_registry,
)
from resilience.rate_limiter._keyed import KeyedRateLimiter
from resilience.redis._bucket import DEFAULT_PREFIX, Bucket, await_tokens, encode_key

__all__ = ["RedisKeyedRateLimiter"]


class RedisKeyedRateLimiter(KeyedRateLimiter):
    """A :class:`~resilience.rate_limiter.KeyedRateLimiter` whose buckets live in Redis.

    Key ``k`` has the Redis key ``{key_prefix}{{name}}:k:{encode_key(k)}``, a
    type-tagged text, so ``1`` and ``"1"`` are two buckets as in memory: all keys of one
    limiter share a cluster slot, and idle buckets expire once refilled. There is no
    ``max_keys`` cap (Redis expires idle keys); ``busiest_keys`` is not tracked.

    Args:
        config, name, redis, key_prefix, fail_open, retry_interval, clock, sleep,
        async_sleep, register, time_source: as for :class:`RedisRateLimiter`.

    Raises:
        ConfigTypeError, ConfigValueError: bad arguments, or ``name`` taken.
    """

    __slots__ = ("_bucket",)

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
    ) -> None:
        super().__init__(
            config, name=name, clock=clock, sleep=sleep, async_sleep=async_sleep, register=False
        )
        self._bucket = Bucket(
            config,
            kind="keyed rate limiter",
            name=name,
            client=redis,
            key_prefix=key_prefix,
            fail_open=fail_open,
            retry_interval=retry_interval,
            clock=clock,
            time_source=time_source,
        )
        if register:
            rate_limiter_registry.add(name, self)

    def __repr__(self) -> str:
        return (
            f"<RedisKeyedRateLimiter {self.name!r} key={self._bucket.prefix!r} "
            f"capacity={self.config.capacity} rate={self._rate:g}/s>"
        )

    def redis_key(self, key: Hashable) -> str:
        """The Redis key holding ``key``'s bucket."""
        return f"{self._bucket.prefix}:k:{encode_key(key)}"

    def try_acquire(self, key: Hashable, tokens: int = 1) -> bool:
        """Take ``tokens`` from ``key``'s shared bucket now if it has them; never waits.

        Returns:
            True if admitted (or Redis is down and ``fail_open``), else False.

        Raises:
            ConfigTypeError, ConfigValueError: bad ``tokens``.
        """
        count = 1 if tokens is ONE else check_tokens(tokens, self.config.capacity)
        wait = self._take(key, count)
        if wait:
            self._refuse(key, count, wait)
            return False
        return True

    async def atry_acquire(self, key: Hashable, tokens: int = 1) -> bool:
        """:meth:`try_acquire` for coroutines (the round trip runs in a thread)."""
        return await asyncio.to_thread(self.try_acquire, key, tokens)

    # ASYNC109: `timeout` is the contract's name (see RateLimiter.aacquire).
    async def aacquire(
        self,
        key: Hashable,
        tokens: int = 1,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
    ) -> None:
        """:meth:`acquire` for coroutines; each attempt runs in a worker thread."""
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)

        def take() -> float:
            return self._take(key, count)

        def refuse(wait: float) -> RateLimitError:
            return self._refuse(key, count, wait)

        await await_tokens(take, self._clock, self._async_sleep, limit, refuse)

    def available_tokens(self, key: Hashable) -> float:
        """Tokens in ``key``'s shared bucket now (a key never seen has a full bucket)."""
        return self._bucket.level(self.redis_key(key))

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        """As ``KeyedRateLimiter.snapshot`` (keys and busiest keys are None / empty),
        plus the backend's health and fallback counters."""
        view = super().snapshot(0)
        view.update(keys=None, max_keys=None, evictions=None, evictions_not_full=None)
        return {**view, **self._bucket.describe()}

    def _take(self, key: Hashable, count: int) -> float:
        wait = self._bucket.take(self.redis_key(key), count)
        if not wait:
            with self._lock:
                self.allowed += 1
        return wait
