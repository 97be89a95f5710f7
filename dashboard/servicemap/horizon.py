"""The horizon of the service map rollup: the highest span id that can no longer change.

SQLite serialises writers, so ids commit in order there: a run folds up to the top id.
On PostgreSQL, several span writers take ids from one sequence and commit in any order:
a transaction can commit a lower id after a run saw higher ones. So a run folds only
ids at or below a *horizon*: the highest id ``S`` read at some earlier moment such that
every transaction open at that moment has ended since. Each run reads ``S`` (the
sequence's last value, and the top stored id for rows inserted with explicit ids), then
the virtual transaction ids of every client session of this database (a transaction
holds its virtual id from its first statement, before it takes any sequence value,
even for ``COPY``: unlike ``pg_snapshot_xmin`` this also covers a writer that has not
been given a real transaction id yet). The pair waits in ``_pending`` until none of
those transactions is still open. With no other open transaction, the horizon is the
id just read. A long open transaction on the database (even a read-only one) holds
the map back until it ends; spans are never lost or counted twice.
"""

from __future__ import annotations

from django.db import connection

from dashboard.traces.models import SpanRecord

#: PostgreSQL: (id S, virtual transaction ids open when S was read), oldest first;
#: guarded by the rollup's lock.
_pending: list[tuple[int, frozenset[str]]] = []
_horizon_value = 0
MAX_PENDING = 64

_OPEN_SQL = (
    "SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid() "
    "AND a.backend_type = 'client backend' AND a.datname = current_database()"
)


def _open_transactions() -> frozenset[str]:
    """Virtual ids of the transactions open now in other client sessions of this database."""
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_SQL)
        return frozenset(row[0] for row in cursor.fetchall())


def _top_id() -> int:
    """The highest span id handed out so far (sequence) or stored (explicit ids)."""
    table = SpanRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT GREATEST(COALESCE(pg_sequence_last_value("
            "pg_get_serial_sequence(%s, 'id')::regclass), 0), "
            f"COALESCE((SELECT MAX(id) FROM {connection.ops.quote_name(table)}), 0))",  # noqa: S608
            [connection.ops.quote_name(table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def horizon() -> int | None:
    """The highest span id a run may fold now (None: no limit, ids commit in order).

    Call with the rollup lock held (it guards ``_pending``).
    """
    global _horizon_value
    if connection.vendor != "postgresql":
        return None
    # Read S before listing open transactions: a writer that took an id <= S began
    # before this read, so it is in the list unless it has already ended.
    _pending.append((_top_id(), _open_transactions()))
    still_open = _open_transactions()
    waiting = []
    for top, txs in _pending:
        if txs & still_open:
            waiting.append((top, txs))
        else:
            _horizon_value = max(_horizon_value, top)
    # Dropping the oldest waiting pair only delays the map: later pairs stay valid.
    _pending[:] = waiting[-MAX_PENDING:]
    return _horizon_value
