"""Pieces shared by the single and the keyed rate limiter: config, checks, waiting, registry.

Private: import the public names from :mod:`resilience.rate_limiter`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from resilience._validate import duration, non_negative_int, positive_int
from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError
from resilience.events import RateLimitRejected, bus
from resilience.registry import Registry

if TYPE_CHECKING:
    from resilience.rate_limiter._bucket import RateLimiter
    from resilience.rate_limiter._keyed import KeyedRateLimiter

__all__ = [
    "MIN_SLEEP",
    "ONE",
    "AnyRateLimiter",
    "KeyedLimiterFactory",
    "LimiterFactory",
    "RateLimitConfig",
    "RateLimiterRegistry",
    "await_for",
    "check_name",
    "check_timeout",
    "check_tokens",
    "publish_rejection",
    "rate_limiter_registry",
    "rejection",
    "wait_for",
    "wait_plan",
]

# The hot paths test `tokens is not ONE` to take the unvalidated path only for the
# int 1 itself (CPython caches small ints): True, 1.0 and other odd values fall
# through to the validating path, which accepts or rejects them properly.
ONE = 1

# A waiter sleeps at least this long, so float rounding (a wait of 1e-17 s that the
# clock cannot represent) can never make it spin without time passing.
MIN_SLEEP = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitConfig:
    """A token bucket: ``max_requests`` per ``time_window``, plus ``burst_size`` extra.

    The bucket holds ``capacity = max_requests + burst_size`` tokens, starts full and
    refills continuously at ``rate = max_requests / time_window`` tokens per second.

    Args:
        max_requests: requests admitted per window at the sustained rate (int >= 1).
        time_window: the window, in seconds (a positive finite number) or a
            ``timedelta``; stored as float seconds.
        burst_size: tokens on top of ``max_requests`` that a full bucket can spend
            at once (int >= 0).

    Raises:
        ConfigTypeError: a value has the wrong type (bools are rejected too).
        ConfigValueError: a value is zero, negative, NaN or infinite.
    """

    max_requests: int
    time_window: float | timedelta
    burst_size: int = 0

    def __post_init__(self) -> None:
        positive_int("max_requests", self.max_requests)
        seconds = duration("time_window", self.time_window, allow_zero=False)
        object.__setattr__(self, "time_window", seconds)
        non_negative_int("burst_size", self.burst_size)

    @property
    def window_seconds(self) -> float:
        """``time_window`` in seconds."""
        window = self.time_window
        return window.total_seconds() if isinstance(window, timedelta) else window

    @property
    def capacity(self) -> int:
        """Tokens a full bucket holds: ``max_requests + burst_size``."""
        return self.max_requests + self.burst_size

    @property
    def rate(self) -> float:
        """Refill rate in tokens per second."""
        return self.max_requests / self.window_seconds

    def describe(self) -> dict[str, Any]:
        """The fields every limiter snapshot starts with."""
        return {
            "max_requests": self.max_requests,
            "time_window": self.window_seconds,
            "burst_size": self.burst_size,
            "capacity": self.capacity,
            "rate": self.rate,
        }


def check_tokens(tokens: object, capacity: int) -> int:
    """Return ``tokens`` if it is an int in ``1..capacity``, else raise naming it."""
    count = positive_int("tokens", tokens)
    if count > capacity:
        raise ConfigValueError(f"tokens must be <= capacity ({capacity}), got {tokens!r}")
    return count


def check_name(name: str | None) -> str | None:
    """Return ``name`` if it is None or a non-empty str, else raise naming it."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigTypeError(f"name must be a str or None, got {name!r}")
    if not name:
        raise ConfigValueError(f"name must not be empty, got {name!r}")
    return name


def check_timeout(timeout: object) -> float | None:
    """``None`` (wait as long as needed) or a duration in seconds (0: do not wait)."""
    return None if timeout is None else duration("timeout", timeout)


class TimedOut(Exception):
    """Internal: the wait needed is longer than the time left before the deadline."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


def wait_plan(
    take: Callable[[], float], clock: Callable[[], float], timeout: float | None
) -> Iterator[float]:
    """Yield how long to sleep until ``take()`` returns 0 (it got its tokens).

    ``take`` returns 0.0 when it took the tokens, else the seconds they need to
    refill. Raises :class:`TimedOut` as soon as the wait would overrun the
    deadline, rather than sleeping first. :func:`wait_for` and :func:`await_for`
    both drive it, so the loop exists once and no lock is held across a sleep.
    """
    deadline = None if timeout is None else clock() + timeout
    while True:
        wait = take()
        if not wait:
            return
        if deadline is not None and clock() + wait > deadline:
            raise TimedOut(wait)
        yield wait if wait > MIN_SLEEP else MIN_SLEEP


def wait_for(
    take: Callable[[], float],
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    timeout: float | None,
    refuse: Callable[[float], RateLimitError],
) -> None:
    """Sleep until ``take`` succeeds; on timeout raise ``refuse(wait)``."""
    try:
        for delay in wait_plan(take, clock, timeout):
            sleep(delay)
    except TimedOut as exc:
        raise refuse(exc.wait) from None


async def await_for(
    take: Callable[[], float],
    clock: Callable[[], float],
    async_sleep: Callable[[float], Awaitable[object]],
    timeout: float | None,  # noqa: ASYNC109 (a deadline checked before sleeping)
    refuse: Callable[[float], RateLimitError],
) -> None:
    """:func:`wait_for` for coroutines: awaits ``async_sleep`` between attempts."""
    try:
        for delay in wait_plan(take, clock, timeout):
            await async_sleep(delay)
    except TimedOut as exc:
        raise refuse(exc.wait) from None


def rejection(
    name: str | None, tokens: int, retry_after: float, key: object = None
) -> RateLimitError:
    """The error a limiter raises when it refuses ``tokens``."""
    who = "rate limit" if name is None else f"rate limit of {name!r}"
    whose = "" if key is None else f" for key {key!r}"
    noun = "token" if tokens == 1 else "tokens"
    return RateLimitError(
        f"{who} exceeded{whose} ({tokens} {noun}); retry in {retry_after:.3f}s",
        retry_after=retry_after,
        name=name,
    )


def publish_rejection(
    name: str | None, tokens: int, retry_after: float, key: object = None
) -> None:
    """Publish :class:`RateLimitRejected`.

    Callers first check ``RateLimitRejected in bus._wanted``.
    """
    bus.publish(
        RateLimitRejected(
            name=name or "",
            time=time.time(),
            tokens=tokens,
            retry_after=retry_after,
            key=None if key is None else str(key),
        )
    )


AnyRateLimiter: TypeAlias = "RateLimiter | KeyedRateLimiter"


class LimiterFactory(Protocol):
    """Builds a single-bucket limiter (``RateLimiter`` or a subclass)."""

    def __call__(
        self,
        config: RateLimitConfig,
        *,
        name: str,
        clock: Callable[[], float] = ...,
        register: bool = ...,
    ) -> RateLimiter: ...


class KeyedLimiterFactory(Protocol):
    """Builds a keyed limiter (``KeyedRateLimiter`` or a subclass)."""

    def __call__(
        self,
        config: RateLimitConfig,
        *,
        name: str,
        max_keys: int = ...,
        clock: Callable[[], float] = ...,
        register: bool = ...,
    ) -> KeyedRateLimiter: ...


class RateLimiterRegistry(Registry[AnyRateLimiter]):
    """Every named limiter in the process, single and keyed, for the API and dashboard.

    A limiter created with a ``name`` registers itself; creating a second one under
    a taken name raises ``ConfigValueError`` (a ``ValueError``), because two limiters
    silently sharing a dashboard row would hide one of them. To share a limiter by
    name, use :meth:`get_or_create`.

    ``factory`` / ``keyed_factory`` build the limiters that :meth:`get_or_create` and
    the ``rate_limit`` decorator create: ``RateLimiter`` / ``KeyedRateLimiter`` by
    default, Redis-backed ones after :func:`resilience.redis.install`. Assigning None
    restores the default.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._factory: LimiterFactory | None = None
        self._keyed_factory: KeyedLimiterFactory | None = None

    @property
    def factory(self) -> LimiterFactory:
        """Builds single-bucket limiters (default ``RateLimiter``)."""
        if self._factory is not None:
            return self._factory
        # Imported when first used, not at import time: _bucket imports this module
        # (the one deliberate back-reference of the package, resolved lazily).
        from resilience.rate_limiter._bucket import RateLimiter

        return RateLimiter

    @factory.setter
    def factory(self, value: LimiterFactory | None) -> None:
        if value is not None and not callable(value):
            raise ConfigTypeError(f"factory must be callable or None, got {value!r}")
        self._factory = value

    @property
    def keyed_factory(self) -> KeyedLimiterFactory:
        """Builds keyed limiters (default ``KeyedRateLimiter``)."""
        if self._keyed_factory is not None:
            return self._keyed_factory
        from resilience.rate_limiter._keyed import KeyedRateLimiter

        return KeyedRateLimiter

    @keyed_factory.setter
    def keyed_factory(self, value: KeyedLimiterFactory | None) -> None:
        if value is not None and not callable(value):
            raise ConfigTypeError(f"keyed_factory must be callable or None, got {value!r}")
        self._keyed_factory = value

    def add(self, name: str, limiter: AnyRateLimiter) -> None:
        """Register ``limiter`` under ``name``; raise ``ConfigValueError`` if taken."""
        if self.register(name, limiter) is not limiter:
            raise ConfigValueError(
                f"a rate limiter named {name!r} is already registered; pick another name, "
                "remove it first, or use rate_limiter_registry.get_or_create()"
            )

    def get_or_create(self, name: str, config: RateLimitConfig) -> AnyRateLimiter:
        """The limiter named ``name`` as it is, or a new ``factory(config, name=name)``.

        An existing limiter is returned even if its config differs from ``config``.
        """
        existing = self.get(name)
        if existing is not None:
            return existing
        factory = self.factory
        return self.setdefault(name, lambda: factory(config, name=name, register=False))


rate_limiter_registry = RateLimiterRegistry("rate limiter")
"""Every named rate limiter in this process (held strongly), sorted by name in ``all()``."""
