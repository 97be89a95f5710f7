"""Reading checkpoint records with raw SQL, and the latest of a workflow from a hint.

Every execution asks for its workflow's latest checkpoint. The ORM's queryset building
and compiling cost about ten times the query itself, so records are read with one raw
statement (cached per backend and filter shape).

The latest of an (agent, workflow) group is the row with the highest ``seq``; no index
serves that order within a group, so the plain query reads every row of the group.
:class:`LatestHints` remembers, per group, the ``seq`` of the latest row it last saw
(a lower bound, never trusted as the answer) and asks only among the newest rows at or
above it::

    SELECT ... FROM (SELECT ... WHERE seq >= <hint> ORDER BY seq DESC LIMIT <window>)
    WHERE agent_id = ... AND workflow_id = ... LIMIT 1

Rows at or above the hint are read newest first through the unique index on ``seq``, so
the first row of the group among them is the group's latest, whoever wrote it (another
process, a clock that stepped back) and whatever was deleted since (the hinted row
itself, by retention or the admin). When the group has no row among them (all deleted,
or more than ``window`` rows were written since by other groups), the answer is not
known from the hint and the plain query runs. So a hint is never invalidated: a stale
one costs the plain query once, then is replaced.

Concurrency model: the hints are one dict per index object, read and written from any
thread without a lock (a race loses a hint, never an answer); it is cleared when it
holds ``MAX_HINTS`` groups.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from resilience.checkpoint import CheckpointRecord

from .models import Checkpoint

COLUMNS = (
    "checkpoint_id",
    "agent_id",
    "workflow_id",
    "created_ts",
    "raw_size",
    "stored_size",
    "sha256",
    "codec",
    "metadata",
    "seq",
)
WINDOW = 256
MAX_HINTS = 10_000
_SQL: dict[tuple[str, ...], str] = {}


def _column(connection: Any, name: str) -> str:
    return str(connection.ops.quote_name(cast(Any, Checkpoint._meta.get_field(name)).column))


def _select(connection: Any) -> str:
    return ", ".join(_column(connection, name) for name in COLUMNS)


def query_sql(connection: Any, *, by_agent: bool, by_workflow: bool, limited: bool) -> str:
    """Records newest first by ``seq`` (rows without one last), filtered and limited."""
    key = (connection.vendor, str(by_agent), str(by_workflow), str(limited))
    sql = _SQL.get(key)
    if sql is None:
        where = [
            f"{_column(connection, name)} = %s"
            for name, on in (("agent_id", by_agent), ("workflow_id", by_workflow))
            if on
        ]
        table = connection.ops.quote_name(Checkpoint._meta.db_table)
        sql = _SQL[key] = (
            f"SELECT {_select(connection)} FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {_column(connection, 'seq')} DESC NULLS LAST, "
            + f"{_column(connection, 'checkpoint_id')} DESC"
            + (" LIMIT %s" if limited else "")
        )
    return sql


def _hinted_sql(connection: Any) -> str:
    key = (connection.vendor, "hinted")
    sql = _SQL.get(key)
    if sql is None:
        table = connection.ops.quote_name(Checkpoint._meta.db_table)
        seq = _column(connection, "seq")
        sql = _SQL[key] = (
            f"SELECT {_select(connection)} FROM (SELECT {_select(connection)} FROM {table} "
            f"WHERE {seq} >= %s ORDER BY {seq} DESC LIMIT {WINDOW}) AS newest "
            f"WHERE {_column(connection, 'agent_id')} = %s "
            f"AND {_column(connection, 'workflow_id')} = %s ORDER BY {seq} DESC LIMIT 1"
        )
    return sql


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON column as a raw cursor reads it: text (SQLite; PostgreSQL under Django's
    loaders) or already decoded."""
    if isinstance(value, str | bytes | bytearray):
        value = json.loads(value)  # as JSONField reads it
    return dict(value) if value else {}


def records(rows: Sequence[Sequence[Any]]) -> list[CheckpointRecord]:
    """Records of rows selected with :data:`COLUMNS`."""
    return [
        CheckpointRecord(
            checkpoint_id=row[0],
            agent_id=row[1],
            workflow_id=row[2],
            created_at=row[3],
            raw_size=row[4],
            stored_size=row[5],
            sha256=row[6],
            codec=row[7],
            metadata=_json_object(row[8]),
        )
        for row in rows
    ]


def query(
    connection: Any, *, agent_id: str | None, workflow_id: str | None, limit: int | None
) -> list[tuple[Any, ...]]:
    """Rows (:data:`COLUMNS`) matching the filters, newest first."""
    params: list[Any] = [v for v in (agent_id, workflow_id) if v is not None]
    if limit is not None:
        params.append(limit)
    sql = query_sql(
        connection,
        by_agent=agent_id is not None,
        by_workflow=workflow_id is not None,
        limited=limit is not None,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cast(list[tuple[Any, ...]], cursor.fetchall())


class LatestHints:
    """The latest record of a group, found from a remembered ``seq`` (module doc)."""

    def __init__(self) -> None:
        self._seq: dict[tuple[str, str], int] = {}

    def latest(self, connection: Any, agent_id: str, workflow_id: str) -> list[tuple[Any, ...]]:
        """The group's latest row (:data:`COLUMNS`), or no row."""
        group = (agent_id, workflow_id)
        hint = self._seq.get(group)
        rows: list[tuple[Any, ...]] = []
        if hint is not None:
            with connection.cursor() as cursor:
                cursor.execute(_hinted_sql(connection), [hint, agent_id, workflow_id])
                rows = cursor.fetchall()
        if not rows:
            rows = query(connection, agent_id=agent_id, workflow_id=workflow_id, limit=1)
        seq = rows[0][-1] if rows else None
        if seq is None:
            self._seq.pop(group, None)
        else:
            if len(self._seq) >= MAX_HINTS:
                self._seq.clear()
            self._seq[group] = seq
        return rows

    def clear(self) -> None:
        self._seq.clear()
