"""The fleet's settings, read from Django settings with embedded defaults."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=float(getattr(settings, name, default)))


def stale_after() -> timedelta:
    """An instance with no report for this long is *stale* (default 5 s)."""
    return _seconds("FLEET_STALE_AFTER", 5.0)


def gone_after() -> timedelta:
    """An instance with no report for this long is *gone* (default 60 s)."""
    return _seconds("FLEET_GONE_AFTER", 60.0)


def command_ttl() -> timedelta:
    """A command not acknowledged within this long is *unreachable* (default 30 s)."""
    return _seconds("FLEET_COMMAND_TTL", 30.0)


def max_report_bytes() -> int:
    """The largest report body accepted (default 1 MiB); larger ones get 413."""
    return int(getattr(settings, "FLEET_MAX_REPORT_BYTES", 1 << 20))


def forget_after() -> timedelta:
    """Gone instances are deleted (with their commands) after this long (default 1 day)."""
    return _seconds("FLEET_FORGET_AFTER", 86400.0)


def report_interval() -> float:
    """Seconds between a worker's reports, sent in every answer (default 1)."""
    return float(getattr(settings, "FLEET_REPORT_INTERVAL", 1.0))
