"""The parameters of each kind of alert rule, checked into frozen dataclasses (each
kind is registered with its dataclass and evaluator in :mod:`.sources`).

Errors name the parameter and the value (``ValueError`` / ``TypeError`` subclasses
from :mod:`resilience.errors`), so the admin form and the rule's ``last_error`` say
what to fix.

Per kind (``*`` globs match breaker and limiter names):

- ``breaker_open``: ``breaker`` (glob, ``*``), ``exclude`` (glob), ``states`` (of
  ``open``, ``forced_open``, ``half_open``; all three by default). "Stays open longer
  than T" is this rule with ``for_seconds = T``.
- ``limiter_rejections``: ``threshold`` (rejections per minute), ``limiter`` (glob),
  ``window`` (seconds, 60).
- ``metric_threshold``: ``metric`` (name, or ``name{label="v"}`` for one series),
  ``threshold``, ``op`` (``>``, ``>=``, ``<``, ``<=``), ``aggregate`` (counter: ``rate``
  per second over ``window``, or ``value``; gauge: ``value``; histogram: ``p95``,
  ``p99``, ``p50``, ``max``, ``min``, ``mean``, ``count``).
- ``span_error_rate``: ``threshold`` (percent), ``service``, ``span`` (span name),
  ``window`` (seconds, 300), ``min_spans`` (1).
- ``span_drops`` / ``checkpoint_failures``: ``threshold`` (count, 0), ``window`` (300).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from resilience._validate import duration, non_negative, positive
from resilience.circuit_breaker import CircuitState
from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "AGGREGATES",
    "OPS",
    "BreakerParams",
    "CountParams",
    "LimiterParams",
    "MetricParams",
    "SpanErrorParams",
]


OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
# The states a breaker rule may fire on: any but CLOSED and DISABLED.
_ALERT_STATES: tuple[str, ...] = (
    CircuitState.OPEN.value,
    CircuitState.FORCED_OPEN.value,
    CircuitState.HALF_OPEN.value,
)
_BREAKER_STATES = frozenset(_ALERT_STATES)
AGGREGATES: dict[str, tuple[str, ...]] = {
    "counter": ("rate", "value"),
    "gauge": ("value",),
    "histogram": ("p95", "p99", "p50", "max", "min", "mean", "count"),
}
_ALL_AGGREGATES = frozenset(a for group in AGGREGATES.values() for a in group)


def _text(field: str, value: object, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ConfigTypeError(f"{field} must be a string, got {value!r}")
    if not allow_empty and not value:
        raise ConfigValueError(f"{field} must not be empty")
    return value


def _choice(field: str, value: object, choices: tuple[str, ...] | frozenset[str]) -> str:
    if value not in choices:
        raise ConfigValueError(f"{field} must be one of {sorted(choices)}, got {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerParams:
    breaker: str = "*"
    exclude: str = ""
    states: tuple[str, ...] = _ALERT_STATES

    def __post_init__(self) -> None:
        _text("breaker", self.breaker, allow_empty=False)
        _text("exclude", self.exclude)
        if not isinstance(self.states, list | tuple):
            raise ConfigTypeError(f"states must be a list, got {self.states!r}")
        if not self.states:
            raise ConfigValueError(f"states must not be empty, got {self.states!r}")
        for state in self.states:
            _choice("states", state, _BREAKER_STATES)
        object.__setattr__(self, "states", tuple(self.states))


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterParams:
    threshold: float
    limiter: str = "*"
    window: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", non_negative("threshold", self.threshold))
        _text("limiter", self.limiter, allow_empty=False)
        object.__setattr__(self, "window", duration("window", self.window, allow_zero=False))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricParams:
    metric: str
    threshold: float
    op: str = ">"
    aggregate: str = ""
    window: float = 60.0

    def __post_init__(self) -> None:
        _text("metric", self.metric, allow_empty=False)
        set_ = object.__setattr__
        set_(self, "threshold", _finite("threshold", self.threshold))
        _choice("op", self.op, tuple(OPS))
        _text("aggregate", self.aggregate)
        if self.aggregate:
            _choice("aggregate", self.aggregate, _ALL_AGGREGATES)
        set_(self, "window", duration("window", self.window, allow_zero=False))


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanErrorParams:
    threshold: float
    service: str = ""
    span: str = ""
    window: float = 300.0
    min_spans: float = 1

    def __post_init__(self) -> None:
        threshold = non_negative("threshold", self.threshold)
        if threshold > 100:
            raise ConfigValueError(f"threshold is a percentage (0-100), got {self.threshold!r}")
        object.__setattr__(self, "threshold", threshold)
        _text("service", self.service)
        _text("span", self.span)
        object.__setattr__(self, "window", duration("window", self.window, allow_zero=False))
        object.__setattr__(self, "min_spans", positive("min_spans", self.min_spans))


@dataclass(frozen=True, slots=True, kw_only=True)
class CountParams:
    threshold: float = 0
    window: float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", non_negative("threshold", self.threshold))
        object.__setattr__(self, "window", duration("window", self.window, allow_zero=False))


def _finite(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigValueError(f"{field} must be finite, got {value!r}")
    return float(value)
