"""One-sync durable checkpoints: blobs and records in one SQLite (WAL) database.

Layout of ``directory``::

    checkpoints.sqlite3 (-wal, -shm)   table ``blobs`` (id, the self-describing blob)
                                       and table ``checkpoints`` (the index records)

Durability and atomicity: a save is one transaction holding the blob and its index
record; the database runs in WAL mode with ``synchronous=FULL``, so ``COMMIT`` appends
the transaction's pages to the WAL and fdatasyncs it once before returning. That one
sync is what makes the save durable (LangGraph's ``SqliteSaver.put`` pays the same
one); there is no new directory entry per save (SQLite syncs the directory once, when it
creates the WAL file). After a crash or power loss, SQLite's recovery replays committed
WAL frames and drops a torn tail (every frame carries a checksum chained from the WAL
header, and only frames up to the last valid commit frame count), so a checkpoint is
either complete with its record, or absent with no record. Deletes and index repairs
are transactions too.

Integrity is still the manager's: each blob keeps its header digest, payload SHA-256
and optional HMAC, checked on every load before anything is decompressed or decoded,
so bytes altered in the database file (by a bug, a disk, or a person) are refused,
never decoded. SQLite's own checksums only cover the WAL, not the database pages.

Space: deleted blobs leave free pages that new saves reuse; the file does not shrink
by itself (run ``VACUUM`` offline to return space to the file system).

Concurrency: one connection per process, used under the index's lock (see
:class:`~resilience.checkpoint.sqlite_index.SqliteMetadataIndex`), so saves from several
threads are serialised (SQLite admits one writer at a time anyway); other processes
wait for the write lock up to ``timeout`` seconds (SQLite's busy timeout).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from resilience.checkpoint.sqlite_index import _UPSERT, SqliteMetadataIndex, _row
from resilience.checkpoint.store import CheckpointRecord
from resilience.errors import CheckpointNotFoundError, ConfigValueError

__all__ = ["DATABASE_NAME", "SqliteCheckpointStore"]

DATABASE_NAME = "checkpoints.sqlite3"
DEFAULT_PAGE_SIZE = 4096
"""Page size of a new database (SQLite's default). Each save also rewrites about six
pages of table and index b-trees, so larger pages write more bytes for states of ~100 KB;
for states of several MB, 16 KiB pages mean four times fewer WAL frames."""
_PAGE_SIZES = frozenset(2**n for n in range(9, 17))
_WAL_BYTES = 1000 * 4096
_CHUNK = 500
# A rowid table (plus the id's index): WITHOUT ROWID would save that index's page
# write, but costs 1.8x the CPU per 1 MB insert (SQLite advises it for small rows).
_BLOBS_SCHEMA = """CREATE TABLE IF NOT EXISTS blobs (
    checkpoint_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
)"""
_UNUSED_INDEXES = ("checkpoints_by_group", "checkpoints_by_workflow")
_PUT_BLOB = "INSERT OR REPLACE INTO blobs (checkpoint_id, data) VALUES (?, ?)"


class SqliteCheckpointStore(SqliteMetadataIndex):
    """A :class:`~resilience.checkpoint.CheckpointStore` keeping blobs and records in
    one SQLite database: one sync per save (see the module docstring for durability).

    Pass it as ``StateCheckpointManager(store=SqliteCheckpointStore(directory))``. The
    manager saves through :meth:`write_checkpoint` (blob and record in one commit).

    Args:
        directory: holds ``checkpoints.sqlite3``; created (mode 0700) on first use.
        timeout: seconds to wait for another process's write lock.
    """

    _SYNCHRONOUS = "FULL"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or page_size not in _PAGE_SIZES
        ):
            raise ConfigValueError(
                f"page_size must be a power of two from 512 to 65536, got {page_size!r}"
            )
        self.directory = Path(directory)
        super().__init__(self.directory / DATABASE_NAME, timeout=timeout)
        self._page_size = page_size

    def __repr__(self) -> str:
        return f"SqliteCheckpointStore({str(self.directory)!r})"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(_BLOBS_SCHEMA)
        # Schema 1's id-ordered indexes serve no query since schema 2 orders by seq;
        # here they would only cost two more page writes per save.
        for index in _UNUSED_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        # The WAL is checkpointed into the database at about the same size in bytes as
        # SQLite's default (1000 pages of 4 KiB), whatever the page size.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, _WAL_BYTES // page_size)}")

    def write_checkpoint(self, record: CheckpointRecord, data: bytes) -> None:
        """Store the blob and insert (or replace) its record in one durable commit."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_PUT_BLOB, (record.checkpoint_id, data))
                conn.execute(_UPSERT, _row(record))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        """Store ``data`` under ``checkpoint_id`` (replacing any) in a durable commit."""
        with self._lock:
            self._connection().execute(_PUT_BLOB, (checkpoint_id, data))

    def read_blob(self, checkpoint_id: str) -> bytes:
        """The blob's bytes. Raises ``CheckpointNotFoundError`` when there is none."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT data FROM blobs WHERE checkpoint_id = ?", (checkpoint_id,))
                .fetchone()
            )
        if row is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}")
        data = row[0]
        return data if isinstance(data, bytes) else bytes(data)

    def delete_blob(self, checkpoint_id: str) -> bool:
        """Remove the blob; True if it existed."""
        with self._lock:
            cursor = self._connection().execute(
                "DELETE FROM blobs WHERE checkpoint_id = ?", (checkpoint_id,)
            )
        return cursor.rowcount > 0

    def delete_blobs(self, checkpoint_ids: Sequence[str]) -> int:
        """Remove these blobs in one transaction (one sync); returns how many existed."""
        ids = list(checkpoint_ids)
        if not ids:
            return 0
        removed = 0
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    cursor = conn.execute(
                        f"DELETE FROM blobs WHERE checkpoint_id IN ({marks})", chunk
                    )
                    removed += cursor.rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return removed

    def iter_blob_ids(self) -> Iterator[str]:
        """Every stored blob id (a snapshot taken when called)."""
        with self._lock:
            rows = self._connection().execute("SELECT checkpoint_id FROM blobs").fetchall()
        return iter([row[0] for row in rows])
