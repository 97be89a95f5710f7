"""Trace search: the filters, the plan, one page of matching traces and the chart.

Search reads TraceSummary (one row per trace, indexed on each sort key), so no
query groups a million spans. Span-level filters (service, name, attribute) are
planned by how many spans match: up to SELECTIVE_SPANS, their trace ids are
collected once; up to FEW_TRACES of them are read by primary key, more are passed
back as one parameter (a JSON array on SQLite, an array on
PostgreSQL), and the summaries are walked in the sort's index order, each checked
against that set, stopping after a page; beyond that, summaries are walked in index
order with a correlated EXISTS on the spans' trace_id index, which finds a page of
matches after a few probes. An attribute alone is answered from the attribute index
(``SpanAttribute``, see ``attribute_index``) instead of the spans' JSON, its newest
matches fetched in the order of the index's first start (``_newest_by_bound``). A "called by"
filter is planned by its candidate spans (``caller_trace_ids``): a few are collected,
each probing its parent; more, and the summaries are walked with the parent probe.

One query reads the newest ``max(COUNT_CAP, chart_limit)`` matches: they are the
chart, the (capped) count, and for the default sort the page itself, so a search
costs one or two walks of an index, not a page query, a count and a chart query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from dashboard.durations import format_us

from .convert import to_datetime, to_us
from .models import SpanRecord, TraceSummary
from .span_filters import caller_trace_ids, indexed_attribute, matching_spans, spans_where

_Row = tuple[str, str, str, int, int, int, int]  # the _ROW_FIELDS of a TraceSummary


def _key_recent(row: _Row) -> tuple[Any, ...]:
    return (row[3], row[0])


def _key_longest(row: _Row) -> tuple[Any, ...]:
    return (row[4], row[0])


def _key_spans(row: _Row) -> tuple[Any, ...]:
    return (row[5], row[3])


def _key_errors(row: _Row) -> tuple[Any, ...]:
    return (row[6], row[3])


# label, ORDER BY for the database, the same order as a (descending) Python sort key
SORTS: dict[str, tuple[str, tuple[str, ...], Callable[[_Row], tuple[Any, ...]]]] = {
    "recent": ("Most recent", ("-start_us", "-trace_id"), _key_recent),
    "longest": ("Longest first", ("-duration_us", "-trace_id"), _key_longest),
    "spans": ("Most spans", ("-span_count", "-start_us"), _key_spans),
    "errors": ("Most errors", ("-error_count", "-start_us"), _key_errors),
}
SELECTIVE_SPANS = 20_000
FEW_TRACES = 1_000
COUNT_CAP = 1_000
_BOUND_SLACK = 16  # traces taken beyond an eighth more than the window (_newest_by_bound)
_ROW_FIELDS = (
    "trace_id",
    "root_name",
    "root_service",
    "start_us",
    "duration_us",
    "span_count",
    "error_count",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceQuery:
    """Search filters. Span-level filters (service, name, attribute, caller) match a
    trace when one of its spans matches all of them; the others apply to the whole trace.
    ``caller``: the span's parent (same trace) is of this service and the span is not, as
    on a service map edge ``caller -> service``."""

    service: str = ""
    caller: str = ""
    name: str = ""
    attribute: tuple[str, str] | None = None
    errors_only: bool = False
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "recent"
    page: int = 1
    per_page: int = 50

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}")
        if self.page < 1 or self.per_page < 1:
            raise ValueError(f"page and per_page must be >= 1, got {self.page}, {self.per_page}")


@dataclass(frozen=True, slots=True)
class TraceRow:
    trace_id: str
    root_name: str
    root_service: str
    start: datetime
    duration_us: int
    span_count: int
    error_count: int

    @property
    def duration(self) -> str:
        return format_us(self.duration_us)


@dataclass(frozen=True, slots=True)
class TracePage:
    rows: list[TraceRow]
    page: int
    per_page: int
    has_next: bool
    total: int
    total_capped: bool

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.rows else 0

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.per_page + len(self.rows)


@dataclass(frozen=True, slots=True)
class ScatterPoint:
    trace_id: str
    start_us: int
    duration_us: int
    error: bool
    label: str


@dataclass(frozen=True, slots=True)
class TraceSearch:
    """A page of matching traces plus the most recent matches for the chart."""

    page: TracePage
    points: list[ScatterPoint]


def _bounds(query: TraceQuery) -> tuple[int | None, int | None]:
    """The time bounds in µs, without those that exclude nothing.

    "Last hour" usually covers every stored trace (retention is an hour too); with
    the bound gone, the database walks the index of the sort key and stops after a
    page instead of sorting every trace in range.
    """
    since = to_us(query.since) if query.since is not None else None
    until = to_us(query.until) if query.until is not None else None
    starts = TraceSummary.objects.order_by("start_us").values_list("start_us", flat=True)
    if since is not None:
        oldest = starts.first()
        if oldest is not None and since <= oldest:
            since = None
    if until is not None:
        newest = starts.last()
        if newest is not None and until >= newest:
            until = None
    return since, until


def _summaries(query: TraceQuery, since: int | None, until: int | None) -> QuerySet[TraceSummary]:
    traces = TraceSummary.objects.order_by()
    if since is not None:
        traces = traces.filter(start_us__gte=since)
    if until is not None:
        traces = traces.filter(start_us__lte=until)
    if query.errors_only:
        traces = traces.filter(error_count__gt=0)
    if query.min_duration_us is not None:
        traces = traces.filter(duration_us__gte=query.min_duration_us)
    if query.max_duration_us is not None:
        traces = traces.filter(duration_us__lte=query.max_duration_us)
    return traces


def _trace_row(row: _Row) -> TraceRow:
    trace_id, name, service, start, duration, spans, errors = row
    return TraceRow(trace_id, name, service, to_datetime(start), duration, spans, errors)


def _points(rows: Sequence[_Row]) -> list[ScatterPoint]:
    return [ScatterPoint(r[0], r[3], r[4], r[6] > 0, r[1]) for r in rows]


def _search_in_database(
    traces: QuerySet[TraceSummary],
    query: TraceQuery,
    limit: int,
    *,
    newest_of: Callable[[int], list[_Row]] | None = None,
) -> TraceSearch:
    """``newest_of(n)``: the ``n`` newest ``traces`` (recent order), read another way."""
    offset = (query.page - 1) * query.per_page
    end = offset + query.per_page + 1
    window = max(COUNT_CAP, limit)
    if query.sort == "recent" and end <= 2 * window:
        # A page just past the count's window: its rows and the count in one walk. A
        # deeper one (up to page 100,000 of 500) is read with OFFSET, never into memory.
        window = max(window, end)
    if newest_of is None:
        recent = traces.order_by(*SORTS["recent"][1]).values_list(*_ROW_FIELDS)
        newest: list[_Row] = list(recent[: window + 1])
    else:
        newest = newest_of(window + 1)
    complete = len(newest) <= window  # every match is in hand
    if query.sort == "recent" and (complete or end <= len(newest)):
        found = newest[offset:end]
    else:
        ordered = traces.order_by(*SORTS[query.sort][1]).values_list(*_ROW_FIELDS)
        found = list(ordered[offset:end])
    rows = [_trace_row(row) for row in found[: query.per_page]]
    has_next = len(found) > query.per_page
    cap = max(COUNT_CAP, end)
    if not has_next and (rows or query.page == 1):
        total, capped = offset + len(rows), False
    elif complete:
        total, capped = len(newest), len(newest) >= cap
    elif cap <= window:
        total, capped = cap, True  # more than ``window`` >= ``cap`` matches
    else:
        total = traces[:cap].count()
        capped = total >= cap
    page = TracePage(rows, query.page, query.per_page, has_next, total, capped)
    return TraceSearch(page, _points(newest[:limit]))


def _by_ids(summaries: QuerySet[TraceSummary], ids: list[str]) -> QuerySet[TraceSummary]:
    """The summaries of ``ids`` (from the attribute index), each read by primary key."""
    few = len(ids) <= FEW_TRACES
    return summaries.filter(Q(trace_id__in=ids) if few else _among(ids, drive=True))


def _newest_by_bound(
    summaries: QuerySet[TraceSummary], bounds: dict[str, int], n: int
) -> list[_Row]:
    """The ``n`` newest (recent order) of the ``summaries`` of ``bounds``' traces (each
    bound at least its trace's ``start_us``), reading about ``n``: traces
    taken by bound, highest first, a few more than ``n`` at a time, until ``n`` are found
    and the next bound is below the ``n``-th's start (no trace left can start later).
    Each round reads only the traces it adds (so never more than one read of every
    match), merged with the newest so far by the recent sort's key (trace_id unique)."""
    recent = SORTS["recent"][1]
    taken = n + n // 8 + _BOUND_SLACK
    # One round takes them all when they are few: no order needed.
    order = (
        list(bounds)
        if len(bounds) <= taken
        else sorted(bounds, key=bounds.__getitem__, reverse=True)
    )
    found: list[_Row] = []
    read = 0
    while True:
        chunk = _by_ids(summaries, order[read:taken])
        rows = list(chunk.order_by(*recent).values_list(*_ROW_FIELDS)[:n])
        found = sorted(found + rows, key=_key_recent, reverse=True)[:n] if found else rows
        if taken >= len(order) or (len(found) == n and bounds[order[taken]] < found[-1][3]):
            return found
        read, taken = taken, taken * 4


def _among(trace_ids: list[str], *, drive: bool = False) -> RawSQL:
    """``trace_id`` is one of ``trace_ids``: one parameter, whatever the number of ids.

    On SQLite the unary ``+`` keeps the planner from driving the query from the id
    list (a lookup and a sort per id): it walks the sort key's index instead, checks
    each trace against the list (built once per query) and stops after a page.
    ``drive``: the other way round (ids from the attribute index, where every match
    costs a lookup but the summaries they miss cost nothing).
    """
    if connection.vendor == "postgresql" and drive:
        # One JSON text: psycopg quotes an array's elements one by one in Python
        # (2 ms for 1,300 ids, as much as the database's work for them).
        ids = "ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))"
        json = orjson.dumps(trace_ids).decode()
        return RawSQL(f'"traces_tracesummary"."trace_id" = ANY({ids})', (json,), BooleanField())
    if connection.vendor == "postgresql":
        return RawSQL('"traces_tracesummary"."trace_id" = ANY(%s)', (trace_ids,), BooleanField())
    plus = "" if drive else "+"
    return RawSQL(
        f'{plus}"traces_tracesummary"."trace_id" IN (SELECT value FROM json_each(%s))',
        (orjson.dumps(trace_ids).decode(),),
        BooleanField(),
    )


def _called_by(
    traces: QuerySet[TraceSummary],
    spans: QuerySet[SpanRecord],
    query: TraceQuery,
    since: int | None,
    until: int | None,
) -> QuerySet[TraceSummary]:
    """A ``caller`` search: the few candidates' trace ids, or else the summaries walked
    in sort order with the EXISTS probe (see ``caller_trace_ids``)."""
    ids = caller_trace_ids(query, since, until)
    if ids is None:
        # A trace without a span of the caller is rejected from the index alone, before
        # the probe reads span rows for their parent ids (about half the traces here).
        callers = SpanRecord.objects.filter(trace_id=OuterRef("trace_id"), service=query.caller)
        traces = traces.filter(Exists(callers.order_by()))
        return traces.filter(Exists(spans.filter(trace_id=OuterRef("trace_id"))))
    unique = list(dict.fromkeys(ids))
    return traces.filter(Q(trace_id__in=unique) if len(unique) <= FEW_TRACES else _among(unique))


@contextmanager
def _serial_plans() -> Iterator[None]:
    """On PostgreSQL, the search's queries without parallel workers.

    Every query here walks an index and stops after a page or a capped window. At 10M
    spans the planner picked Gather Merge plans for them, whose two workers took 45–90 ms
    to start, against 7–12 ms for the serial walk (EXPLAIN ANALYZE, 1M and 10M spans):
    ``SET LOCAL`` keeps it to this transaction.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        yield


def search_traces(*, query: TraceQuery, chart_limit: int = 500) -> TraceSearch:
    """One page of traces matching ``query`` in its sort order, and the ``chart_limit``
    most recent matches for the duration-over-time chart."""
    with _serial_plans():
        return _search_traces(query, chart_limit)


def _search_traces(query: TraceQuery, chart_limit: int) -> TraceSearch:
    since, until = _bounds(query)
    traces = _summaries(query, since, until)
    indexed = indexed_attribute(query, since, until)
    if indexed is not None:
        # The attribute index alone: trace ids and the first start of their matching
        # spans read from its primary key (PostgreSQL: index only). That start is one of
        # a stored span of the trace, so at least the summary's start_us (the earliest
        # start of the spans written into it, in the index row's transaction; retention
        # never raises it): the newest traces are fetched in that bound's order.
        rows = list(indexed.values_list("trace_id", "first_us")[: SELECTIVE_SPANS + 1])
        if len(rows) > SELECTIVE_SPANS:
            traces = traces.filter(Exists(indexed.filter(trace_id=OuterRef("trace_id"))))
            return _search_in_database(traces, query, chart_limit)
        bounds: dict[str, int] = {}
        for trace_id, first_us in rows:
            bounds[trace_id] = min(first_us, bounds.get(trace_id, first_us))
        attributed = _by_ids(traces, list(bounds))
        summary_filter = query.min_duration_us is not None or query.max_duration_us is not None
        if query.errors_only or summary_filter:
            # Most of the traces taken would be filtered out: every match read at once.
            return _search_in_database(attributed, query, chart_limit)
        return _search_in_database(
            attributed,
            query,
            chart_limit,
            newest_of=lambda n: _newest_by_bound(traces, bounds, n),
        )
    spans = matching_spans(query, since, until)
    if spans is not None and query.caller:
        return _search_in_database(
            _called_by(traces, spans, query, since, until), query, chart_limit
        )
    if spans is not None:
        matching = Exists(spans.filter(trace_id=OuterRef("trace_id")))
        # Service and name together have no index of their own: collect the ids by the
        # name's index alone (read without span rows), and let the EXISTS probe (from the
        # trace_id index, also without span rows) check the service on those traces only.
        both = bool(query.service and query.name and query.attribute is None)
        collect = spans_where(query, since, until, service="") if both else spans
        ids = list(collect.values_list("trace_id", flat=True)[: SELECTIVE_SPANS + 1])
        unique = list(dict.fromkeys(ids))
        if len(ids) > SELECTIVE_SPANS:
            traces = traces.filter(matching)
        else:
            # A few traces: fetched by primary key and sorted. More: the sort key's index
            # walked against the id set, stopping after a page.
            among = Q(trace_id__in=unique) if len(unique) <= FEW_TRACES else _among(unique)
            traces = traces.filter(among)
            if both:
                traces = traces.filter(matching)
    return _search_in_database(traces, query, chart_limit)
