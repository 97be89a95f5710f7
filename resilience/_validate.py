"""Validation helpers for configuration objects: clear errors naming field and value."""

from __future__ import annotations

import math
from datetime import timedelta

from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = ["duration", "non_negative", "positive", "positive_int", "non_negative_int"]


def _number(field: str, value: object) -> float:
    # bool is an int subclass; True as a threshold is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigTypeError(f"{field} must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigValueError(f"{field} must be finite, got {value!r}")
    return float(value)


def _integer(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{field} must be an int, got {value!r}")
    return value


def positive(field: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a number > 0."""
    number = _number(field, value)
    if number <= 0:
        raise ConfigValueError(f"{field} must be > 0, got {value!r}")
    return number


def non_negative(field: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a number >= 0."""
    number = _number(field, value)
    if number < 0:
        raise ConfigValueError(f"{field} must be >= 0, got {value!r}")
    return number


def positive_int(field: str, value: object) -> int:
    """Return ``value``, or raise if it is not an int >= 1."""
    number = _integer(field, value)
    if number < 1:
        raise ConfigValueError(f"{field} must be >= 1, got {value!r}")
    return number


def non_negative_int(field: str, value: object) -> int:
    """Return ``value``, or raise if it is not an int >= 0."""
    number = _integer(field, value)
    if number < 0:
        raise ConfigValueError(f"{field} must be >= 0, got {value!r}")
    return number


def duration(field: str, value: object, *, allow_zero: bool = True) -> float:
    """Return a duration in seconds from a number or a ``timedelta``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else _number(field, value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigValueError(f"{field} must be {bound} seconds, got {value!r}")
    return seconds
