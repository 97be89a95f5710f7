"""A three-state circuit breaker (closed, open, half-open) plus two operator states.

A breaker wraps calls to one dependency. After ``failure_threshold`` consecutive
failures (or a failure rate over a sliding window) it opens and rejects calls with
:class:`~resilience.errors.CircuitOpenError` without running them; after ``timeout``
it lets a few trial calls through and closes again when they succeed. Operators can
force it open or disable it. No lock is ever held while the protected call runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._core import BreakerCore, CircuitState, open_error
from resilience.errors import ConfigTypeError, ConfigValueError
from resilience.events import CallRejected, Listener, bus
from resilience.registry import Registry

__all__ = [
    "BreakerFactory",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "circuit_breaker_registry",
]

P = ParamSpec("P")
R = TypeVar("R")

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_HALF_OPEN = CircuitState.HALF_OPEN


class CircuitBreaker(BreakerCore):
    """Stop calling a failing dependency for a while, then probe it with trial calls.

    A breaker registers itself in :data:`circuit_breaker_registry` under ``name``
    unless ``register`` is False.

    Args:
        name: unique, non-empty name (shown in errors, events and the dashboard).
        config: the rules; defaults to ``CircuitBreakerConfig()``.
        clock: monotonic seconds, used for timeouts and slow-call durations.
        wall_clock: epoch seconds, used for event times and ``opened_at``.
        register: set False to keep the breaker out of the registry (a private
            breaker: not shown by the API, dashboard or ``/metrics``, and its name
            may repeat).

    Raises:
        ConfigTypeError: ``name`` is not a str, ``config`` not a CircuitBreakerConfig,
            or a clock is not callable.
        ConfigValueError: ``name`` is empty.
        ValueError: ``register`` is True and a breaker named ``name`` is already
            registered; use
            ``circuit_breaker_registry.get_or_create(name)`` to share it, or
            ``circuit_breaker_registry.remove(name)`` first to replace it.
    """

    __slots__ = ()

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        register: bool = True,
    ) -> None:
        if not isinstance(name, str):
            raise ConfigTypeError(f"name must be a str, got {name!r}")
        if not name:
            raise ConfigValueError(f"name must not be empty, got {name!r}")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise ConfigTypeError(f"config must be a CircuitBreakerConfig, got {config!r}")
        for field, value in (("clock", clock), ("wall_clock", wall_clock)):
            if not callable(value):
                raise ConfigTypeError(f"{field} must be callable, got {value!r}")
        self._setup(name, config, clock, wall_clock)
        if register and circuit_breaker_registry.register(name, self) is not self:
            raise ValueError(
                f"a circuit breaker named {name!r} already exists; use "
                f"circuit_breaker_registry.get_or_create({name!r}) to share it"
            )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state.value}>"

    @property
    def name(self) -> str:
        """The breaker's registered name."""
        return self._name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The configuration the breaker was built with."""
        return self._config

    # -- calls -----------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under the breaker's rules.

        Returns:
            What ``fn`` returned (also for a slow call, which still counts as a failure).

        Raises:
            CircuitOpenError: the breaker is open, forced open, or half-open with every
                trial slot taken; ``fn`` was not called.
            CallTimeoutError: ``fn`` returned after ``call_timeout``; it counts as a
                failure and its result is discarded (a sync call cannot be interrupted).
            Exception: whatever ``fn`` raised, unchanged.
        """
        # The CLOSED and OPEN fast paths are repeated in acall and _sync_wrapper: a
        # shared helper would cost a call each. The generation is read before the
        # state (see BreakerCore._transition).
        generation = self._generation
        state = self._state
        if state is _CLOSED and self._plain:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._on_error(exc, generation, None)
                raise
            self._successful.add()
            if self._failure_count:
                self._record(generation, None)
            return result
        if state is _OPEN:
            remaining = self._open_until - self._clock()
            if remaining > 0:
                self._rejected.add()
                if self._listeners or CallRejected in bus._wanted:
                    self._announce_rejection(remaining)
                raise open_error(self._name, remaining, self._open_message)
        elif state is _DISABLED:
            return fn(*args, **kwargs)
        generation = self._admit()
        start = self._clock() if self._timed else None
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, generation, start)
            raise
        limit = self._call_timeout
        if limit is not None and start is not None and self._clock() - start >= limit:
            raise self._timed_out(generation)
        self._on_success(generation, start)
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` under the breaker's rules, like :meth:`call`.

        Cancellation from outside (``asyncio.CancelledError``, e.g. the caller's own
        ``asyncio.timeout``) is not a failure; it frees the trial slot of a half-open
        call. The breaker's own ``call_timeout`` cancels ``fn`` and is a failure.

        Returns:
            What the awaited ``fn`` returned.

        Raises:
            CircuitOpenError: the call was rejected; ``fn`` was not called.
            CallTimeoutError: ``fn`` ran past ``call_timeout`` and was cancelled (also
                when it swallowed the cancellation and returned late).
            BaseException: whatever ``fn`` raised, unchanged.
        """
        generation = self._generation
        state = self._state
        if state is _OPEN:
            remaining = self._open_until - self._clock()
            if remaining > 0:
                self._rejected.add()
                if self._listeners or CallRejected in bus._wanted:
                    self._announce_rejection(remaining)
                raise open_error(self._name, remaining, self._open_message)
        elif state is _DISABLED:
            return await fn(*args, **kwargs)
        if state is not _CLOSED or not self._plain:
            generation = self._admit()
            if self._call_timeout is not None:
                return await self._await_limited(generation, fn, args, kwargs)
        start = None if self._slow_limit is None else self._clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, generation, start)
            raise
        self._on_success(generation, start)
        return result

    async def _await_limited(
        self,
        generation: int,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """Await an admitted call under ``call_timeout``, cancelling it at the deadline."""
        start = self._clock()
        scope = asyncio.timeout(self._call_timeout)
        try:
            async with scope:
                result = await fn(*args, **kwargs)
        except TimeoutError as exc:
            if scope.expired():
                raise self._timed_out(generation) from exc
            self._on_error(exc, generation, start)
            raise
        except BaseException as exc:
            self._on_error(exc, generation, start)
            raise
        if scope.expired():  # fn swallowed the cancellation and returned late
            raise self._timed_out(generation)
        self._on_success(generation, start)
        return result

    def _enter(self) -> int | None:
        """Admission of a stream at its first step; None: DISABLED, record nothing."""
        if self._state is _DISABLED:
            return None
        return self._admit()

    # -- operator actions ----------------------------------------------------------------

    def reset(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Close the breaker and clear its failure/success counters and window.

        Always publishes a ``BreakerStateChanged`` (even from CLOSED) so the operator
        action is on record; lifetime call totals are kept.

        Args:
            actor: who did it (recorded in the event).
            reason: why (recorded as the event's ``note``).
        """
        self._operator(_CLOSED, "manual reset", actor, reason)

    def force_open(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Reject every call (``remaining=None``) until :meth:`reset` or :meth:`disable`.

        Args:
            actor: who did it (recorded in the event).
            reason: why (recorded as the event's ``note``).
        """
        self._operator(_FORCED_OPEN, "forced open by operator", actor, reason)

    def disable(self, *, actor: str | None = None, reason: str | None = None) -> None:
        """Let every call through without recording anything until :meth:`reset`.

        Args:
            actor: who did it (recorded in the event).
            reason: why (recorded as the event's ``note``).
        """
        self._operator(_DISABLED, "disabled by operator", actor, reason)

    # -- observation -----------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state; moves OPEN to HALF_OPEN once ``timeout`` has passed."""
        self._refresh()
        return self._state

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for this breaker's state changes and rejections.

        Listeners run on the calling thread outside the breaker's lock; exceptions
        they raise are logged and counted in ``listener_errors``, never propagated.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; no error if it was not added."""
        with self._lock:
            self._listeners = tuple(item for item in self._listeners if item != listener)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of the breaker, for APIs and dashboards.

        Returns:
            ``name``, ``state`` (value string), ``failure_count`` (consecutive),
            ``success_count`` (half-open successes), ``failure_rate`` (percent; None
            when the rule is off or too few calls are recorded), ``opened_at`` (epoch
            seconds or None), ``seconds_until_half_open`` (OPEN only, else None),
            ``last_failure`` (``{"type", "message", "time"}`` or None),
            ``half_open_calls_in_flight`` (trial slots held, by trials of this period
            and earlier ones still running), ``half_open_max_calls``, ``calls``
            (lifetime totals: ``successful``, ``failed`` (slow calls and timeouts
            included), ``rejected``, ``ignored`` (ignored exceptions and
            BaseExceptions), ``slow``), ``window`` (the failure-rate sliding window:
            ``size``, ``calls`` in it, ``failed`` among them; None when that rule is
            off) and ``config``. Calls are not counted while DISABLED.
        """
        self._refresh()
        with self._lock:
            state = self._state
            window = self._window
            until = None
            if state is _OPEN:
                until = max(self._open_until - self._clock(), 0.0)
            view: dict[str, Any] = {
                "name": self._name,
                "state": state.value,
                "failure_count": self._failure_count,
                "success_count": self._success_count,
                "failure_rate": None if window is None else window.rate(self._minimum_calls),
                "opened_at": self._opened_at,
                "seconds_until_half_open": until,
                "last_failure": None if self._last_failure is None else dict(self._last_failure),
                "half_open_calls_in_flight": (
                    self._in_flight + self._stale_total if state is _HALF_OPEN else 0
                ),
                "half_open_max_calls": self._max_trials,
                "window": None
                if window is None
                else {
                    "size": self._config.sliding_window_size,
                    "calls": len(window),
                    "failed": window.failures,
                },
            }
        view["calls"] = {
            "successful": self._successful.value(),
            "failed": self._failed.value(),
            "rejected": self._rejected.value(),
            "ignored": self._ignored.value(),
            "slow": self._slow.value(),
        }
        view["config"] = self._config.to_dict()
        return view


BreakerFactory = Callable[[str, CircuitBreakerConfig | None], CircuitBreaker]
"""Builds (and registers) a breaker from a name and an optional config."""


class CircuitBreakerRegistry(Registry[CircuitBreaker]):
    """Every :class:`CircuitBreaker` of the process, by name.

    ``factory`` builds the breakers that :meth:`get_or_create` (and so the
    :func:`circuit_breaker` decorator) creates: :class:`CircuitBreaker` by default,
    a Redis-shared breaker after :func:`resilience.redis.install`. Breakers built
    directly with a class are not affected.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.factory: BreakerFactory = CircuitBreaker

    def get_or_create(
        self, name: str, config: CircuitBreakerConfig | None = None
    ) -> CircuitBreaker:
        """The breaker named ``name``, created by ``factory(name, config)`` if there is none.

        An existing breaker is returned as it is: ``config`` is then not applied.

        Raises:
            ConfigTypeError / ConfigValueError: ``name`` or ``config`` is invalid.
        """
        existing = self.get(name)
        if existing is not None:
            return existing
        try:
            return self.factory(name, config)
        except ValueError:
            existing = self.get(name)  # another thread registered it first
            if existing is None:
                raise
            return existing


circuit_breaker_registry = CircuitBreakerRegistry("circuit breaker")
"""The process-wide registry every breaker joins on creation."""
