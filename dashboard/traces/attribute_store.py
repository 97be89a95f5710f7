"""Writing and repairing the span-attribute index (``attribute_index`` says what it holds).

``write_attributes`` merges a batch's rows into the index inside the span writer's
transaction; ``refresh_span_attributes`` recomputes the rows that deleted spans
contributed to, from their traces' remaining spans (retention and the admin's delete).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from . import attribute_index
from .convert import SpanRow, to_us
from .models import SpanAttribute, SpanRecord

_CHUNK = 2_000  # traces per read of the remaining spans
_STAGE = "span_attribute_stage"  # PostgreSQL: the session's temporary staging table


def write_attributes(cursor: Any, connection: BaseDatabaseWrapper, rows: Sequence[SpanRow]) -> None:
    """Merge ``rows``' attributes into the index: one upsert per trace, key and value
    (sorted, so concurrent writers lock rows in one order)."""
    params = attribute_index.attribute_rows(
        (row.trace_id, row.start_us, row.attributes) for row in rows
    )
    if not params:
        return
    if connection.vendor == "postgresql":
        # COPY into a session's temporary table (emptied at commit), then one
        # INSERT ... SELECT: a multi-row VALUES upsert cost the client ~4x the CPU.
        table = SpanAttribute._meta.db_table
        cursor.execute(
            f'CREATE TEMPORARY TABLE IF NOT EXISTS "{_STAGE}" (LIKE "{table}")'
            " ON COMMIT DELETE ROWS"
        )
        columns = ", ".join(attribute_index.COLUMNS)
        with cursor.cursor.copy(f'COPY "{_STAGE}" ({columns}) FROM STDIN') as copy:
            write = copy.write_row
            for param in params:
                write(param)
        # Moved out of the stage, which an enclosing transaction would otherwise keep;
        # in key order, so concurrent writers lock rows in one order.
        moved = f"SELECT {columns} FROM moved ORDER BY {columns}"
        cursor.execute(
            f'WITH moved AS (DELETE FROM "{_STAGE}" RETURNING *) '
            + attribute_upsert_sql(connection, source=moved)
        )
    else:
        cursor.executemany(attribute_upsert_sql(connection), params)


def attribute_upsert_sql(connection: BaseDatabaseWrapper, *, source: str = "") -> str:
    """Upsert rows of the attribute index from ``source`` (a SELECT), or one row of
    parameters."""
    table = SpanAttribute._meta.db_table
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    values = source or f"VALUES ({', '.join(['%s'] * len(attribute_index.COLUMNS))})"
    return (
        f'INSERT INTO "{table}" ({", ".join(attribute_index.COLUMNS)}) {values} '
        "ON CONFLICT (key, value, trace_id) DO UPDATE SET "
        f'first_us = {least}("{table}".first_us, excluded.first_us), '
        f'last_us = {greatest}("{table}".last_us, excluded.last_us)'
    )


def refresh_span_attributes(
    deleted: Sequence[tuple[str, int, dict[str, Any]]], *, using: str
) -> None:
    """After spans were deleted (``(trace_id, start_us, attributes)``, start unused):
    each index row they contributed to is recomputed from its trace's remaining spans,
    or deleted when none carries the attribute any more, so that ``first_us`` and
    ``last_us`` stay starts of stored spans."""
    touched = {row[:3] for row in attribute_index.attribute_rows(deleted)}
    if not touched:
        return
    table = SpanAttribute._meta.db_table
    connection = connections[using]
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        # Delete them first, locking them in key order (as writers do): a writer upserting
        # one now waits for this commit, and one that already did has committed its span,
        # which the read below then sees; the rows still carried are put back below. The
        # keys go as one JSON text (psycopg quotes array elements one by one in Python).
        with connection.cursor() as cursor:
            cursor.execute(
                f'DELETE FROM "{table}" WHERE (key, value, trace_id) IN'
                f' (SELECT key, value, trace_id FROM "{table}" WHERE (key, value, trace_id) IN'
                " (SELECT x->>0, x->>1, x->>2 FROM jsonb_array_elements(%s::jsonb) AS x)"
                " ORDER BY key, value, trace_id FOR UPDATE)",
                [orjson.dumps(sorted(touched)).decode()],
            )
    traces = sorted({trace for _, _, trace in touched})
    kept: dict[tuple[str, str, str], tuple[int, int]] = {}
    remaining = SpanRecord.objects.using(using).order_by()
    for i in range(0, len(traces), _CHUNK):
        spans = remaining.filter(trace_id__in=traces[i : i + _CHUNK]).values_list(
            "trace_id", "start", "attributes"
        )
        rows = attribute_index.attribute_rows(
            (trace, to_us(start), attributes) for trace, start, attributes in spans
        )
        kept.update((row[:3], row[3:]) for row in rows if row[:3] in touched)
    if postgresql:
        if kept:
            source = (
                "SELECT x->>0, x->>1, x->>2, (x->>3)::bigint, (x->>4)::bigint"
                " FROM jsonb_array_elements(%s::jsonb) AS x ORDER BY 1, 2, 3"
            )
            with connection.cursor() as cursor:
                cursor.execute(
                    attribute_upsert_sql(connection, source=source),
                    [orjson.dumps([(*row, *starts) for row, starts in kept.items()]).decode()],
                )
        return
    gone = sorted(touched - kept.keys())
    with connection.cursor() as cursor:
        if gone:
            cursor.executemany(
                f'DELETE FROM "{table}" WHERE key = %s AND value = %s AND trace_id = %s', gone
            )
        if kept:
            cursor.executemany(
                f'UPDATE "{table}" SET first_us = %s, last_us = %s'
                " WHERE key = %s AND value = %s AND trace_id = %s",
                [(*starts, *row) for row, starts in sorted(kept.items())],
            )
