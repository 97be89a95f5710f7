"""The local store's metadata index: checkpoint records in one SQLite file (WAL).

Used by :class:`~resilience.checkpoint.local.LocalCheckpointStore` beside its blob
files, and extended by :class:`~resilience.checkpoint.sqlite.SqliteCheckpointStore`,
which keeps the blobs in the same database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from resilience._validate import positive
from resilience.checkpoint.store import CheckpointRecord
from resilience.errors import CheckpointError

__all__ = ["SqliteMetadataIndex"]

_SCHEMA_VERSION = 2
_COLUMNS = (
    "checkpoint_id, agent_id, workflow_id, created_at, raw_size, stored_size, sha256, codec, "
    "metadata"
)
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS checkpoints (
        checkpoint_id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        workflow_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        raw_size INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        codec TEXT NOT NULL,
        metadata TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS checkpoints_by_group "
    "ON checkpoints (agent_id, workflow_id, checkpoint_id)",
    "CREATE INDEX IF NOT EXISTS checkpoints_by_workflow "
    "ON checkpoints (workflow_id, checkpoint_id)",
)
# Version 2: ``seq``, assigned by the index on insert, orders records (newest = highest).
# Ids follow each writer's wall clock, which may step back or differ between hosts.
# Existing records are numbered in id order.
_UPGRADE_2 = (
    "ALTER TABLE checkpoints ADD COLUMN seq INTEGER",
    """UPDATE checkpoints SET seq = ranked.n FROM (
        SELECT checkpoint_id, ROW_NUMBER() OVER (ORDER BY checkpoint_id) AS n FROM checkpoints
    ) AS ranked WHERE ranked.checkpoint_id = checkpoints.checkpoint_id""",
    "CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_by_seq ON checkpoints (seq)",
    "CREATE INDEX IF NOT EXISTS checkpoints_by_group_seq "
    "ON checkpoints (agent_id, workflow_id, seq)",
    "CREATE INDEX IF NOT EXISTS checkpoints_by_workflow_seq ON checkpoints (workflow_id, seq)",
)
_UPSERT = (
    f"INSERT INTO checkpoints ({_COLUMNS}, seq) VALUES (?,?,?,?,?,?,?,?,?,"
    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM checkpoints)) "
    "ON CONFLICT (checkpoint_id) DO UPDATE SET agent_id = excluded.agent_id, "
    "workflow_id = excluded.workflow_id, created_at = excluded.created_at, "
    "raw_size = excluded.raw_size, stored_size = excluded.stored_size, "
    "sha256 = excluded.sha256, codec = excluded.codec, metadata = excluded.metadata"
)


class SqliteMetadataIndex:
    """Checkpoint records in a SQLite database in WAL mode, safe across processes.

    One connection per process, used under a lock (each statement takes well under a
    millisecond). Other processes are waited for up to ``timeout`` seconds (SQLite's
    busy timeout). ``synchronous=NORMAL``: a power loss may forget the last few records,
    never corrupt the file; their blobs are durable and ``rebuild_index`` restores them.

    Args:
        path: the database file; its directory is created on first use.
        timeout: seconds to wait for another process's write lock.
    """

    _SYNCHRONOUS = "NORMAL"
    _page_size: int | None = None

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = positive("timeout", timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # A connection inherited through fork() must be neither used nor closed by the
        # child (SQLite forbids it); keep it referenced so it is never finalised there.
        self._inherited: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"SqliteMetadataIndex({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        # Called with self._lock held.
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            return conn
        if conn is not None:
            self._inherited.append(conn)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if self._page_size is not None:  # only takes effect on a new database
                conn.execute(f"PRAGMA page_size = {self._page_size}")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._SYNCHRONOUS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise CheckpointError(
                    f"{self.path} has index schema {version}; this version reads "
                    f"{_SCHEMA_VERSION} (run rebuild_index() with a fresh index file)"
                )
            if version < _SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Read again under the write lock: another process may have upgraded.
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version < 1:
                        for statement in _SCHEMA:
                            conn.execute(statement)
                    if version < 2:
                        for statement in _UPGRADE_2:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Called once per new connection, after the schema is current (subclasses)."""

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock and SQLite reports "database is locked"
        # at once, without its busy handler, while another process creates the file.
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", None) in (5, 6)  # BUSY, LOCKED
                if not (busy or "locked" in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def add_record(self, record: CheckpointRecord) -> None:
        """Insert the record with the next sequence number, or replace the one with the
        same id (keeping its sequence number)."""
        with self._lock:
            self._connection().execute(_UPSERT, _row(record))

    def get_record(self, checkpoint_id: str) -> CheckpointRecord | None:
        """The record with this id, or None."""
        with self._lock:
            row = (
                self._connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM checkpoints WHERE checkpoint_id = ?", (checkpoint_id,)
                )
                .fetchone()
            )
        return None if row is None else _record(row)

    def query_records(
        self,
        *,
        agent_id: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        """Matching records, newest (highest sequence number) first."""
        where: list[str] = []
        params: list[Any] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            params.append(workflow_id)
        sql = f"SELECT {_COLUMNS} FROM checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        return [_record(row) for row in rows]

    def remove_records(self, checkpoint_ids: Sequence[str]) -> None:
        """Remove these records (in one transaction); unknown ids are ignored."""
        ids = list(checkpoint_ids)
        if not ids:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    conn.execute(f"DELETE FROM checkpoints WHERE checkpoint_id IN ({marks})", chunk)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                if self._pid == os.getpid():
                    conn.close()
                else:
                    self._inherited.append(conn)


def _row(record: CheckpointRecord) -> tuple[Any, ...]:
    """The parameters of ``_UPSERT`` for ``record``."""
    return (
        record.checkpoint_id,
        record.agent_id,
        record.workflow_id,
        record.created_at,
        record.raw_size,
        record.stored_size,
        record.sha256,
        record.codec,
        orjson.dumps(record.metadata).decode(),
    )


def _record(row: tuple[Any, ...]) -> CheckpointRecord:
    return CheckpointRecord(
        checkpoint_id=row[0],
        agent_id=row[1],
        workflow_id=row[2],
        created_at=row[3],
        raw_size=row[4],
        stored_size=row[5],
        sha256=row[6],
        codec=row[7],
        metadata=orjson.loads(row[8]),
    )
