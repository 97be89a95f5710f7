"""Configuration of :class:`resilience.circuit_breaker.CircuitBreaker` (re-exported there)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from resilience._validate import duration, positive, positive_int
from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = ["CircuitBreakerConfig", "qualified_name"]

ExceptionTypes = tuple[type[Exception], ...]


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class; builtins are shown bare (``ValueError``)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_types(field: str, value: object) -> ExceptionTypes:
    # A single class is accepted as shorthand for a one-element tuple.
    items: Iterable[object]
    if isinstance(value, type):
        items = (value,)
    elif isinstance(value, tuple | list | frozenset | set):
        items = value
    else:
        raise ConfigTypeError(f"{field} must be a tuple of exception types, got {value!r}")
    result: list[type[Exception]] = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            # BaseExceptions that are not Exceptions (KeyboardInterrupt, CancelledError)
            # are never failures, so listing them would silently do nothing.
            raise ConfigTypeError(
                f"{field} must contain Exception subclasses, got {item!r} in {value!r}"
            )
        result.append(item)
    return tuple(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerConfig:
    """How a :class:`~resilience.circuit_breaker.CircuitBreaker` decides to open and close.

    The breaker opens when ``failure_threshold`` consecutive calls fail, or, when the
    failure-rate rule is on (``sliding_window_size`` set), when at least
    ``failure_rate_threshold`` percent of the last ``sliding_window_size`` recorded calls
    failed once ``minimum_calls`` of them are recorded. It stays open for ``timeout``
    seconds, then lets up to ``half_open_max_calls`` trial calls run at once;
    ``success_threshold`` successful trials close it, any failed trial reopens it.

    Args:
        failure_threshold: consecutive failures that open the breaker (int >= 1).
        success_threshold: successful half-open trial calls that close it (int >= 1).
        timeout: seconds (number or ``timedelta``, >= 0) the breaker stays open before
            trial calls are allowed. Stored as float seconds.
        half_open_max_calls: trial calls allowed to run at the same time (int >= 1).
        failure_exceptions: exception types that count as failures. Other exceptions
            propagate and count as successes (the remote side answered). A single
            class is accepted and stored as a one-element tuple.
        ignored_exceptions: exception types that are not recorded at all; they win
            over ``failure_exceptions``.
        sliding_window_size: number of most recent calls the failure-rate rule looks
            at; ``None`` turns the rule off.
        minimum_calls: calls that must be recorded in the window before the rate is
            evaluated; defaults to ``sliding_window_size`` and may not exceed it.
        failure_rate_threshold: percentage (0 < x <= 100) of failed calls in the
            window that opens the breaker; defaults to 50.
        slow_call_duration: seconds (number or ``timedelta``, > 0); a successful call
            taking this long or longer counts as a failure (its result is still
            returned). ``None`` turns the rule off. Stored as float seconds.
        call_timeout: seconds (number or ``timedelta``, > 0) a call may take; a call
            that runs longer counts as a failure and raises
            :class:`~resilience.errors.CallTimeoutError` (a ``TimeoutError``). Async
            calls are cancelled at the deadline (``asyncio.timeout``). Sync calls
            cannot be interrupted safely in Python, so they run to completion and are
            then failed if they took too long (the result is discarded). For streams
            it bounds each step (each ``next``/``anext``), not the whole iteration.
            ``None`` (default) turns it off. Stored as float seconds.

    Raises:
        ConfigTypeError: a value has the wrong type.
        ConfigValueError: a value is out of range, or ``minimum_calls`` /
            ``failure_rate_threshold`` is set without ``sliding_window_size``.
    """

    failure_threshold: int = 5
    success_threshold: int = 2
    timeout: float | timedelta = 60.0
    half_open_max_calls: int = 3
    failure_exceptions: ExceptionTypes = (Exception,)
    ignored_exceptions: ExceptionTypes = ()
    sliding_window_size: int | None = None
    minimum_calls: int | None = None
    failure_rate_threshold: float | None = None
    slow_call_duration: float | timedelta | None = None
    call_timeout: float | timedelta | None = None

    def __post_init__(self) -> None:
        positive_int("failure_threshold", self.failure_threshold)
        positive_int("success_threshold", self.success_threshold)
        positive_int("half_open_max_calls", self.half_open_max_calls)
        set_ = object.__setattr__
        set_(self, "timeout", duration("timeout", self.timeout))
        set_(
            self,
            "failure_exceptions",
            _exception_types("failure_exceptions", self.failure_exceptions),
        )
        set_(
            self,
            "ignored_exceptions",
            _exception_types("ignored_exceptions", self.ignored_exceptions),
        )
        if self.slow_call_duration is not None:
            set_(
                self,
                "slow_call_duration",
                duration("slow_call_duration", self.slow_call_duration, allow_zero=False),
            )
        if self.call_timeout is not None:
            set_(
                self,
                "call_timeout",
                duration("call_timeout", self.call_timeout, allow_zero=False),
            )
        self._check_rate_rule()

    def _check_rate_rule(self) -> None:
        window = self.sliding_window_size
        if window is None:
            for field in ("minimum_calls", "failure_rate_threshold"):
                value = getattr(self, field)
                if value is not None:
                    raise ConfigValueError(
                        f"{field} needs sliding_window_size to be set, got {field}={value!r} "
                        "with sliding_window_size=None"
                    )
            return
        positive_int("sliding_window_size", window)
        if self.minimum_calls is None:
            object.__setattr__(self, "minimum_calls", window)
        else:
            minimum = positive_int("minimum_calls", self.minimum_calls)
            if minimum > window:
                raise ConfigValueError(
                    f"minimum_calls must be <= sliding_window_size ({window}), got {minimum!r}"
                )
        if self.failure_rate_threshold is None:
            object.__setattr__(self, "failure_rate_threshold", 50.0)
        else:
            rate = positive("failure_rate_threshold", self.failure_rate_threshold)
            if rate > 100:
                raise ConfigValueError(
                    f"failure_rate_threshold must be <= 100 (percent), "
                    f"got {self.failure_rate_threshold!r}"
                )
            object.__setattr__(self, "failure_rate_threshold", rate)

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` as float seconds."""
        return _seconds(self.timeout)

    @property
    def slow_call_seconds(self) -> float | None:
        """``slow_call_duration`` as float seconds, or None when the rule is off."""
        value = self.slow_call_duration
        return None if value is None else _seconds(value)

    @property
    def call_timeout_seconds(self) -> float | None:
        """``call_timeout`` as float seconds, or None when it is off."""
        value = self.call_timeout
        return None if value is None else _seconds(value)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values; exception types by qualified name."""
        return {
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "timeout": self.timeout_seconds,
            "half_open_max_calls": self.half_open_max_calls,
            "failure_exceptions": [qualified_name(t) for t in self.failure_exceptions],
            "ignored_exceptions": [qualified_name(t) for t in self.ignored_exceptions],
            "sliding_window_size": self.sliding_window_size,
            "minimum_calls": self.minimum_calls,
            "failure_rate_threshold": self.failure_rate_threshold,
            "slow_call_duration": self.slow_call_seconds,
            "call_timeout": self.call_timeout_seconds,
        }


def _seconds(value: float | timedelta) -> float:
    # __post_init__ already normalised to float; this only narrows the type.
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
