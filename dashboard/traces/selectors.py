"""Read-side queries for the trace browser and the ``spans`` command.

Trace search lives in ``search`` (and its span-level filters in ``span_filters``);
its public names are re-exported here, where views, the API and the bench import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from .models import SpanRecord, SpanStatus, TraceSummary
from .search import (
    COUNT_CAP,
    FEW_TRACES,
    SELECTIVE_SPANS,
    SORTS,
    ScatterPoint,
    TracePage,
    TraceQuery,
    TraceRow,
    TraceSearch,
    search_traces,
)
from .waterfall import TraceDetail, trace_detail

__all__ = [
    "COUNT_CAP",
    "FEW_TRACES",
    "SELECTIVE_SPANS",
    "SORTS",
    "ScatterPoint",
    "StoreStats",
    "TraceDetail",
    "TracePage",
    "TraceQuery",
    "TraceRow",
    "TraceSearch",
    "distinct_values",
    "first_error_span_id",
    "search_traces",
    "span_record",
    "store_stats",
    "trace_detail",
]


def distinct_values(*, field_name: str, limit: int = 100) -> list[str]:
    """Distinct ``service`` or ``name`` values, by a loose index scan.

    Each value costs one ``MIN(field) WHERE field > previous`` seek on the field's
    index instead of a DISTINCT over every span; the seeks run inside one recursive
    query (SQLite and PostgreSQL), not one round trip each.
    """
    if field_name not in ("service", "name"):
        raise ValueError(f"field_name must be 'service' or 'name', got {field_name!r}")
    quote = connection.ops.quote_name
    table = quote(SpanRecord._meta.db_table)
    column = quote(field_name)  # the fields have no db_column: name and column agree
    sql = (
        f"WITH RECURSIVE seen(value, n) AS ("
        f" SELECT (SELECT MIN({column}) FROM {table}), 1"
        f" UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > seen.value), n + 1"
        f" FROM seen WHERE seen.value IS NOT NULL AND n < %s"
        f") SELECT value FROM seen WHERE value IS NOT NULL ORDER BY n"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [value for (value,) in cursor.fetchall()]


def span_record(*, trace_id: str, span_id: str) -> SpanRecord | None:
    """The full stored span (attributes, events, resource)."""
    return SpanRecord.objects.filter(trace_id=trace_id, span_id=span_id).order_by("id").first()


def first_error_span_id(*, trace_id: str) -> str | None:
    return (
        SpanRecord.objects.filter(trace_id=trace_id, status=SpanStatus.ERROR)
        .order_by("start", "id")
        .values_list("span_id", flat=True)
        .first()
    )


@dataclass(frozen=True, slots=True)
class StoreStats:
    spans: int
    traces: int
    error_spans: int
    oldest: datetime | None
    newest: datetime | None


def store_stats() -> StoreStats:
    """Totals for ``manage.py spans stats``."""
    starts = SpanRecord.objects.order_by("start").values_list("start", flat=True)
    return StoreStats(
        spans=SpanRecord.objects.count(),
        traces=TraceSummary.objects.count(),
        error_spans=SpanRecord.objects.filter(status=SpanStatus.ERROR).count(),
        oldest=starts.first(),
        newest=starts.last(),
    )
