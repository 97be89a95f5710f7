"""Writes: persisting spans (with their trace summaries) and retention clean-up."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import orjson
from django.conf import settings
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from opentelemetry.sdk.trace import ReadableSpan

from .attribute_store import refresh_span_attributes, write_attributes
from .convert import SpanRow, TraceDelta, span_rows, to_datetime, to_us
from .masking import Masker
from .models import SpanRecord, TraceSummary

DELETE_CHUNK = 5_000
_UPSERT_CHUNK = 2_000  # rows per multi-row upsert: 9 parameters each, PostgreSQL allows 65,535
_NAIVE_EPOCH = datetime(1970, 1, 1)
_SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "kind",
    "start",
    "end",
    "duration_us",
    "status",
    "status_message",
    "attributes",
    "events",
    "links",
    "resource",
)


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an int beyond 64 bits
        return json.dumps(value, default=str)


def _span_params(rows: Sequence[SpanRow], connection: BaseDatabaseWrapper) -> list[tuple[Any, ...]]:
    if connection.vendor == "sqlite" and settings.USE_TZ:
        # What Django's SQLite backend stores for an aware UTC datetime and a JSONField,
        # computed without a model instance per row (bulk_create costs ~3x more here).
        def when(us: int) -> Any:
            return str(_NAIVE_EPOCH + timedelta(microseconds=us))

        dumps: Callable[[Any], Any] = _json_text
    else:
        adapt_dt, adapt_json = (
            connection.ops.adapt_datetimefield_value,
            connection.ops.adapt_json_value,
        )

        def when(us: int) -> Any:
            return adapt_dt(to_datetime(us))

        def dumps(value: Any) -> Any:
            return adapt_json(value, None)

    resources: dict[int, Any] = {}
    params = []
    for row in rows:
        resource = resources.get(id(row.resource))
        if resource is None:
            resource = resources[id(row.resource)] = dumps(row.resource)
        params.append(
            (
                row.trace_id,
                row.span_id,
                row.parent_span_id,
                row.name,
                row.service,
                row.kind,
                when(row.start_us),
                when(row.end_us),
                row.end_us - row.start_us,
                row.status,
                row.status_message,
                dumps(row.attributes),
                dumps(row.events),
                dumps(row.links),
                resource,
            )
        )
    return params


def _insert_sql(connection: BaseDatabaseWrapper) -> str:
    quote = connection.ops.quote_name
    return (
        f"INSERT INTO {quote(SpanRecord._meta.db_table)} "
        f"({', '.join(quote(c) for c in _SPAN_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(_SPAN_COLUMNS))})"
    )


def _copy_spans(cursor: Any, rows: Sequence[SpanRow]) -> None:
    """PostgreSQL: rows through ``COPY ... FROM STDIN`` (psycopg 3), in text format,
    where the server parses timestamps and JSON itself (2-3x an executemany)."""
    table = SpanRecord._meta.db_table
    columns = ", ".join(f'"{c}"' for c in _SPAN_COLUMNS)
    resources: dict[int, str] = {}
    with cursor.cursor.copy(f'COPY "{table}" ({columns}) FROM STDIN') as copy:
        write = copy.write_row
        for row in rows:
            resource = resources.get(id(row.resource))
            if resource is None:
                resource = resources[id(row.resource)] = _json_text(row.resource)
            write(
                (
                    row.trace_id,
                    row.span_id,
                    row.parent_span_id,
                    row.name,
                    row.service,
                    row.kind,
                    f"{_NAIVE_EPOCH + timedelta(microseconds=row.start_us)}+00",
                    f"{_NAIVE_EPOCH + timedelta(microseconds=row.end_us)}+00",
                    row.end_us - row.start_us,
                    row.status,
                    row.status_message,
                    _json_text(row.attributes),
                    _json_text(row.events),
                    _json_text(row.links),
                    resource,
                )
            )


def write_spans(
    spans: Sequence[ReadableSpan | SpanRow], *, masker: Masker, using: str = "default"
) -> int:
    """Insert ``spans`` and fold them into their traces' summaries, in one transaction.

    SDK spans are masked and converted here; SpanRows (OTLP ingest) come masked.
    Rows go in with ``COPY`` on PostgreSQL and one ``executemany`` (a multi-row bulk
    insert) elsewhere, values adapted as the backend's own operations do.

    Returns:
        The number of span rows written.
    """
    rows, deltas = span_rows(spans, masker)
    # Summaries upserted in trace order, as the attribute rows are: two writers whose
    # batches share traces lock them in one order, so they cannot deadlock (PostgreSQL).
    deltas = sorted(deltas, key=attrgetter("trace_id"))
    if not rows:
        return 0
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy_spans(cursor, rows)
        else:
            cursor.executemany(_insert_sql(connection), _span_params(rows, connection))
        write_attributes(cursor, connection, rows)
        if connection.vendor == "postgresql":
            # One statement for the batch (a trace appears once among the deltas):
            # a round trip and a plan per trace cost PostgreSQL ~4x the CPU.
            for i in range(0, len(deltas), _UPSERT_CHUNK):
                chunk = deltas[i : i + _UPSERT_CHUNK]
                params = [value for delta in chunk for value in delta.as_params()]
                cursor.execute(_upsert_sql(connection, rows=len(chunk)), params)
        else:
            cursor.executemany(_upsert_sql(connection), [delta.as_params() for delta in deltas])
    return len(rows)


def _upsert_sql(connection: BaseDatabaseWrapper, *, rows: int = 1) -> str:
    quote = connection.ops.quote_name
    table = quote(TraceSummary._meta.db_table)
    columns = [
        "trace_id",
        "root_name",
        "root_service",
        "root_rank",
        "start_us",
        "end_us",
        "duration_us",
        "span_count",
        "error_count",
    ]
    rank, start, end = (f"{table}.{quote(c)}" for c in ("root_rank", "start_us", "end_us"))
    better = f"excluded.{quote('root_rank')} < {rank}"
    new_start = f"CASE WHEN excluded.{quote('start_us')} < {start} THEN excluded.{quote('start_us')} ELSE {start} END"  # noqa: E501
    new_end = f"CASE WHEN excluded.{quote('end_us')} > {end} THEN excluded.{quote('end_us')} ELSE {end} END"  # noqa: E501

    def pick(column: str) -> str:
        c = quote(column)
        return f"{c} = CASE WHEN {better} THEN excluded.{c} ELSE {table}.{c} END"

    def add(column: str) -> str:
        c = quote(column)
        return f"{c} = {table}.{c} + excluded.{c}"

    one_row = f"({', '.join(['%s'] * len(columns))})"
    # Standard INSERT ... ON CONFLICT: SQLite >= 3.24 and PostgreSQL >= 9.5. Every SET
    # expression reads the row's old values, so the order of assignments is free.
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES {', '.join([one_row] * rows)} "
        f"ON CONFLICT ({quote('trace_id')}) DO UPDATE SET "
        f"{pick('root_name')}, {pick('root_service')}, {pick('root_rank')}, "
        f"{quote('start_us')} = {new_start}, {quote('end_us')} = {new_end}, "
        f"{quote('duration_us')} = ({new_end}) - ({new_start}), "
        f"{add('span_count')}, {add('error_count')}"
    )


def upsert_summaries(deltas: Sequence[TraceDelta], *, using: str = "default") -> None:
    """Create or grow each delta's TraceSummary (one trace per delta)."""
    if deltas:
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.executemany(_upsert_sql(connection), [delta.as_params() for delta in deltas])


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """What a retention run removed (or, with ``dry_run``, would remove)."""

    spans: int
    traces: int
    cutoff: datetime | None
    dry_run: bool = False


def _delete_chunked(queryset: QuerySet[Any], chunk_size: int, limit: int | None = None) -> int:
    model = queryset.model
    deleted = 0
    while limit is None or deleted < limit:
        size = chunk_size if limit is None else min(chunk_size, limit - deleted)
        if model is SpanRecord:
            spans = list(queryset.values_list("pk", "trace_id", "attributes")[:size])
            pks = [pk for pk, _, _ in spans]
        else:
            pks = list(queryset.values_list("pk", flat=True)[:size])
        if not pks:
            break
        # Each chunk commits on its own, so writers wait for one chunk at most. The
        # condition is checked again as rows are deleted: a summary a writer extended
        # since its id was read (a span committed in between) is not expired any more.
        with transaction.atomic(using=queryset.db):
            count, _ = queryset.order_by().filter(pk__in=pks).delete()
            if model is SpanRecord:  # their index rows, in the same transaction
                refresh_span_attributes(
                    [(trace, 0, attributes) for _, trace, attributes in spans],
                    using=queryset.db,
                )
        deleted += count
        if len(pks) < size:
            break
    return deleted


def delete_spans(pks: Sequence[int], *, using: str) -> int:
    """Delete the spans ``pks`` and bring their traces' attribute-index rows up to date,
    in one transaction (the admin's delete; retention deletes in chunks)."""
    with transaction.atomic(using=using):
        spans = SpanRecord.objects.using(using).filter(pk__in=pks)
        deleted = list(spans.values_list("trace_id", "attributes"))
        count, _ = spans.delete()
        refresh_span_attributes([(trace, 0, attrs) for trace, attrs in deleted], using=using)
    return count


def cleanup_spans(
    *,
    now: datetime,
    max_age: timedelta | None,
    max_rows: int | None,
    chunk_size: int = DELETE_CHUNK,
    dry_run: bool = False,
) -> CleanupResult:
    """Delete spans older than ``max_age`` and the oldest beyond ``max_rows``.

    Trace summaries go when every span of theirs is older than what is kept.
    Deletes run in chunks of ``chunk_size`` rows, each its own transaction.

    Args:
        now: the current time (injected so tests control it).
        max_age: keep spans that started at most this long before ``now``; None: no age limit.
        max_rows: keep at most this many spans; None: no row limit.
        chunk_size: rows per DELETE statement.
        dry_run: only count what would be deleted.
    """
    spans = 0
    cutoff = now - max_age if max_age is not None else None
    if cutoff is not None:
        old = SpanRecord.objects.filter(start__lt=cutoff).order_by("start")
        spans += old.count() if dry_run else _delete_chunked(old, chunk_size)
    if max_rows is not None:
        total = SpanRecord.objects.count() - (spans if dry_run else 0)
        excess = max(total - max_rows, 0)
        if excess:
            if dry_run:
                spans += excess
                remaining = SpanRecord.objects.order_by("start", "id")
                if cutoff is not None:
                    remaining = remaining.filter(start__gte=cutoff)
                boundary = remaining.values_list("start", flat=True)[excess : excess + 1]
                kept_from = next(iter(boundary), None)
            else:
                oldest_first = SpanRecord.objects.order_by("start", "id")
                spans += _delete_chunked(oldest_first, chunk_size, limit=excess)
                kept_from = (
                    SpanRecord.objects.order_by("start").values_list("start", flat=True).first()
                )
            if kept_from is not None and (cutoff is None or kept_from > cutoff):
                cutoff = kept_from
    traces = 0
    if cutoff is not None:
        expired = TraceSummary.objects.filter(end_us__lt=to_us(cutoff)).order_by("end_us")
        traces = expired.count() if dry_run else _delete_chunked(expired, chunk_size)
        if traces and not dry_run:
            # A span started before the cutoff and written since the spans were deleted
            # (late ingest) may have lost its summary above: gone too, with its index
            # rows, so no span outlives its summary into a trace's next one (whose
            # start would then be later than the index row's first_us, see search).
            late = SpanRecord.objects.filter(start__lt=cutoff).order_by("start")
            spans += _delete_chunked(late, chunk_size)
    return CleanupResult(spans=spans, traces=traces, cutoff=cutoff, dry_run=dry_run)
