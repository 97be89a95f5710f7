"""Base units for Prometheus: a histogram recorded in milliseconds is exported in seconds.

Prometheus names carry base units (``_seconds``, ``_bytes``) and ``promtool check
metrics`` rejects abbreviations such as ``_ms``. Callers of
:meth:`Metrics.record_histogram` often time in milliseconds (``task_duration_ms``), so
the facade keeps their name and values (snapshots, alerts) and converts only the
exposition: ``task_duration_ms`` is published as ``task_duration_seconds``, with bucket
bounds and sum divided by 1000. The hot path is untouched: scaling happens at scrape.
"""

from __future__ import annotations

from typing import Final

__all__ = ["base_unit"]

# Suffix of the Prometheus name → (base-unit suffix, factor to the base unit).
_UNITS: Final = (
    ("_milliseconds", "_seconds", 1e-3),
    ("_millis", "_seconds", 1e-3),
    ("_ms", "_seconds", 1e-3),
    ("_microseconds", "_seconds", 1e-6),
    ("_us", "_seconds", 1e-6),
    ("_kilobytes", "_bytes", 1e3),
    ("_kb", "_bytes", 1e3),
)


def base_unit(prom_name: str) -> tuple[str, float]:
    """The exported name and the factor turning recorded values into base units.

    ``"task_duration_ms"`` → ``("task_duration_seconds", 0.001)``; a name without a
    known abbreviated unit is returned unchanged with factor ``1.0``.
    """
    for suffix, base, factor in _UNITS:
        if prom_name.endswith(suffix) and len(prom_name) > len(suffix):
            return prom_name[: -len(suffix)] + base, factor
    return prom_name, 1.0
