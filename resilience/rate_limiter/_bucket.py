"""The single token bucket, :class:`RateLimiter` (re-exported by :mod:`resilience.rate_limiter`).

A bucket holds up to ``capacity`` tokens, starts full and refills continuously at
``rate`` tokens per second; each request spends tokens or is refused. The state is
two floats (level and time of the last update) behind one lock held only for the
arithmetic, never across a sleep or the protected call.

Waiting callers are served in order: :meth:`RateLimiter.acquire` reserves its
tokens at once, letting the level go below zero (a debt), and then sleeps until
the debt is repaid. Every later request, waiting or not, sees the debt and queues
behind it, so a large request cannot starve while small ones keep the bucket
drained. A waiter that is cancelled or interrupted gives its tokens back.

``try_acquire()`` with the default single token takes an unvalidated fast path:
it is the product, measured against a hand-written floor in
``bench/bench_limiter.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

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

__all__ = ["RateLimiter"]


class RateLimiter:
    """One token bucket shared by every caller.

    Args:
        config: capacity and refill rate.
        name: shown by the API and dashboard; a named limiter registers itself in
            ``rate_limiter_registry`` (see ``register``).
        clock: monotonic seconds; inject a fake one in tests.
        sleep: how :meth:`acquire` waits.
        async_sleep: how :meth:`aacquire` waits.
        register: set False to keep a named limiter out of the registry.

    Raises:
        ConfigTypeError: ``config`` is not a :class:`RateLimitConfig` or ``name``
            is not a non-empty str.
        ConfigValueError: ``name`` is already registered (use
            ``rate_limiter_registry.get_or_create`` to share a limiter by name).

    Attributes:
        allowed: requests admitted so far (requests, not tokens).
        rejected: requests refused so far.
    """

    __slots__ = (
        "_async_sleep",
        "_capacity",
        "_clock",
        "_last",
        "_level",
        "_lock",
        "_rate",
        "_sleep",
        "allowed",
        "config",
        "name",
        "rejected",
    )

    # Whether acquire() reserves in this object's own bucket. A subclass whose bucket
    # lives elsewhere (it overrides _take, e.g. in Redis) waits by retrying _take.
    _reserves: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._reserves = cls._take is RateLimiter._take

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        register: bool = True,
    ) -> None:
        if not isinstance(config, RateLimitConfig):
            raise ConfigTypeError(f"config must be a RateLimitConfig, got {config!r}")
        self.config = config
        self.name = check_name(name)
        self.allowed = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._rate = config.rate
        self._capacity = float(config.capacity)
        self._level = self._capacity
        self._last = clock()
        if name is not None and register:
            rate_limiter_registry.add(name, self)

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.name!r} capacity={self.config.capacity} "
            f"rate={self._rate:g}/s allowed={self.allowed} rejected={self.rejected}>"
        )

    def try_acquire(self, tokens: int = 1) -> bool:
        """Take ``tokens`` now if the bucket has them; never waits.

        Args:
            tokens: an int from 1 to the capacity.

        Returns:
            True if admitted, False if refused (counted in ``rejected``).

        Raises:
            ConfigTypeError: ``tokens`` is not an int.
            ConfigValueError: ``tokens`` is < 1 or > capacity.
        """
        if tokens is not ONE:
            return self._try_acquire_many(tokens)
        # A local, not `self._clock()`: CPython 3.11 cannot specialise a method-style
        # call of a callable held in a slot, which cost ~120 instructions per call.
        clock = self._clock
        with self._lock:
            now = clock()
            level = self._level + (now - self._last) * self._rate
            if level >= 1.0:
                capacity = self._capacity
                self._level = (capacity if level > capacity else level) - 1.0
                self._last = now
                self.allowed += 1
                return True
            # Refused: level < 1 <= capacity, so it was not capped and the stored
            # (level, last) pair still describes it; nothing to write back.
            self.rejected += 1
        # One set lookup: no event is built unless a listener wants rejections.
        if RateLimitRejected in bus._wanted:
            publish_rejection(self.name, 1, (1.0 - level) / self._rate)
        return False

    def _try_acquire_many(self, tokens: object) -> bool:
        count = check_tokens(tokens, self.config.capacity)
        wait = self._take(count)
        if wait:
            self._refuse(count, wait)
            return False
        return True

    def acquire(self, tokens: int = 1, timeout: float | timedelta | None = None) -> None:
        """Take ``tokens``, sleeping (with the injected ``sleep``) until they refill.

        Waiters are first come, first served: the tokens are reserved at once (the
        bucket may go into debt) and nobody can take them during the sleep.

        Args:
            tokens: an int from 1 to the capacity.
            timeout: seconds (or ``timedelta``) to wait at most; ``None`` waits as
                long as needed, ``0`` does not wait.

        Raises:
            RateLimitError: the tokens cannot be had within ``timeout``; raised as
                soon as that is known, with ``retry_after`` and ``name`` set.
            ConfigTypeError, ConfigValueError: bad ``tokens`` or ``timeout``.
        """
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)
        if self._reserves:
            wait = self._reserve(count, limit)
            if wait:
                try:
                    self._sleep(max(wait, MIN_SLEEP))
                except BaseException:
                    self._give_back(count)
                    raise
            return
        wait_for(
            partial(self._take, count),
            self._clock,
            self._sleep,
            limit,
            partial(self._refuse, count),
        )

    # ASYNC109: `timeout` is the contract's name, mirroring acquire(); it raises
    # RateLimitError as soon as the wait would overrun, which asyncio.timeout cannot.
    async def aacquire(
        self,
        tokens: int = 1,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
    ) -> None:
        """:meth:`acquire` for coroutines: waits with the injected ``async_sleep``."""
        count = check_tokens(tokens, self.config.capacity)
        limit = check_timeout(timeout)
        if self._reserves:
            wait = self._reserve(count, limit)
            if wait:
                try:
                    await self._async_sleep(max(wait, MIN_SLEEP))
                except BaseException:  # cancelled: the tokens go back to the bucket
                    self._give_back(count)
                    raise
            return
        await await_for(
            partial(self._take, count),
            self._clock,
            self._async_sleep,
            limit,
            partial(self._refuse, count),
        )

    def available_tokens(self) -> float:
        """Tokens in the bucket now (fractional while refilling)."""
        with self._lock:
            level = self._level + (self._clock() - self._last) * self._rate
        return max(min(level, self._capacity), 0.0)

    def retry_after(self, tokens: int = 1) -> float:
        """Seconds until ``tokens`` are available; 0.0 if they are available now."""
        count = check_tokens(tokens, self.config.capacity)
        with self._lock:
            level = self._level + (self._clock() - self._last) * self._rate
        return 0.0 if level >= count else (count - level) / self._rate

    def snapshot(self) -> dict[str, Any]:
        """State for the API and dashboard (plain JSON-able values)."""
        return {
            "name": self.name,
            "kind": "bucket",
            **self.config.describe(),
            "available_tokens": self.available_tokens(),
            "allowed": self.allowed,
            "rejected": self.rejected,
        }

    def _take(self, count: int) -> float:
        """Take ``count`` tokens and return 0.0, or return the seconds they need."""
        with self._lock:
            now = self._clock()
            level = self._level + (now - self._last) * self._rate
            if level >= count:
                capacity = self._capacity
                self._level = (capacity if level > capacity else level) - count
                self._last = now
                self.allowed += 1
                return 0.0
        return (count - level) / self._rate

    def _reserve(self, count: int, limit: float | None) -> float:
        """Take ``count`` tokens now, into debt if needed; the seconds until it is repaid.

        Raises:
            RateLimitError: the wait would exceed ``limit``; nothing was taken.
        """
        with self._lock:
            now = self._clock()
            level = self._level + (now - self._last) * self._rate
            if level > self._capacity:
                level = self._capacity
            wait = 0.0 if level >= count else (count - level) / self._rate
            if limit is None or wait <= limit:
                self._level = level - count
                self._last = now
                self.allowed += 1
                return wait
        raise self._refuse(count, wait)

    def _give_back(self, count: int) -> None:
        """Return the tokens of a waiter that gave up (cancelled or interrupted)."""
        with self._lock:
            now = self._clock()
            level = self._level + (now - self._last) * self._rate + count
            self._level = min(level, self._capacity)
            self._last = now
            self.allowed -= 1

    def _refuse(self, count: int, wait: float) -> RateLimitError:
        with self._lock:
            self.rejected += 1
        if RateLimitRejected in bus._wanted:
            publish_rejection(self.name, count, wait)
        return rejection(self.name, count, wait)
