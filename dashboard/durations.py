"""Durations typed by people: ``250ms``, ``1.5s``, ``2m``, ``1h``, ``7d``, ``2w``, ``300us``.

One parser for every form, command and setting of the dashboard (trace filters,
checkpoint cleanup ages, token lifetimes, retention settings).
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_US = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
HELP = "seconds, or a number with s, m, h, d or w: 30s, 15m, 12h, 7d"


class DurationTooLong(ValueError):
    """A well-formed duration beyond the 100-year cap."""


_PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)\s*\Z", re.IGNORECASE)


def parse_duration_us(text: str, *, default_unit: str) -> int:
    """Microseconds in ``text`` (a non-negative number with an optional unit).

    Raises:
        ValueError: not a number, an unknown unit, or too large.
    """
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 250ms, 1.5s, 2m, 1h)")
    number, unit = match.groups()
    unit = (unit or default_unit).lower()
    if unit not in _UNITS_US:
        raise ValueError(f"unknown unit {unit!r} in {text!r}; use us, ms, s, m, h, d or w")
    value = float(number) * _UNITS_US[unit]
    if value > 100 * 365 * _UNITS_US["d"]:
        raise DurationTooLong(f"{text!r} is too long (at most 100 years)")
    return round(value)


def parse_timedelta(text: str, *, default_unit: str = "s") -> timedelta:
    """``parse_duration_us`` as a timedelta."""
    return timedelta(microseconds=parse_duration_us(text, default_unit=default_unit))


def format_duration(value: timedelta) -> str:
    """The largest whole unit up to days: ``7d``, ``36h``, ``90s``."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNITS_US[unit] // 1_000_000
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_us(value: int | float | None) -> str:
    """A short human form: ``850µs``, ``12.3ms``, ``4.56s``, ``2m 3s``."""
    if value is None:
        return "—"
    if value < 1_000:
        return f"{value:.0f}µs"
    if value < 1_000_000:
        return f"{value / 1_000:.3g}ms" if value < 100_000 else f"{value / 1_000:.0f}ms"
    if value < 60_000_000:
        return f"{value / 1_000_000:.3g}s"
    minutes, seconds = divmod(int(value // 1_000_000), 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
