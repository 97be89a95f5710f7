"""The default local store: one file per blob and a SQLite (WAL) metadata index.

Layout of ``directory``::

    ck_<tick>_<rand>.ckpt      one blob per checkpoint (mode 0600)
    .ck_<...>.<rand>.tmp       a blob being written (left behind only by a crash)
    index.sqlite3 (-wal, -shm) the metadata index; rebuildable from the blobs

Nothing is created on disk until the first operation that needs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from resilience._validate import non_negative, positive
from resilience.checkpoint._ids import CHECKPOINT_ID_PATTERN, validate_checkpoint_id
from resilience.checkpoint.store import CheckpointRecord, CompositeCheckpointStore
from resilience.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["FileBlobStore", "LocalCheckpointStore", "SqliteMetadataIndex"]

BLOB_SUFFIX = ".ckpt"
_TEMP_SUFFIX = ".tmp"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# fdatasync skips flushing metadata a read does not need (mtime); the size of a new
# file is still flushed, so the data is as durable as with fsync, one journal write less.
_datasync = getattr(os, "fdatasync", os.fsync)


class FileBlobStore:
    """Blobs as files in one directory, written atomically and durably.

    A write goes to a temporary file in the same directory (one ``write`` of the whole
    blob), is fdatasynced, renamed over
    the final name with ``os.replace`` and the directory is fsynced, so after a crash a
    blob is either complete or absent. A directory the store creates (and each missing
    parent) has its parent fsynced too, so the directory entry itself survives a crash;
    a directory removed while the store is in use is created again by the next write.

    Args:
        directory: where blobs live; created (mode 0700) on the first write.
        fsync: fsync file and directory (keep True outside throwaway tests).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self._dir_ready = False

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.directory)!r})"

    def path(self, checkpoint_id: str) -> Path:
        """The file that holds (or would hold) this checkpoint's blob."""
        return self.directory / (validate_checkpoint_id(checkpoint_id) + BLOB_SUFFIX)

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        """Write ``data`` atomically and durably (see the class docstring)."""
        final = self.path(checkpoint_id)
        if not self._dir_ready:
            self._make_directory()
        temp = self.directory / f".{checkpoint_id}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600)
        except FileNotFoundError:
            # The directory was removed since it was made (by hand, a cleanup job).
            self._make_directory()
            fd = os.open(temp, flags, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    _datasync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if self.fsync and os.name == "posix":
            self._fsync_directory(self.directory)

    def _make_directory(self) -> None:
        """Create the directory and its missing parents, each made durable in its parent."""
        missing: list[Path] = []
        path = self.directory
        while not path.is_dir() and path.parent != path:
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                continue  # another thread or process made it
            if self.fsync and os.name == "posix":
                self._fsync_directory(directory.parent)
        self._dir_ready = True

    def _fsync_directory(self, directory: Path) -> None:
        # Makes a rename or a new entry durable (POSIX: a directory can be fsynced).
        fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:  # some file systems refuse fsync on a directory
            if exc.errno not in (errno.EINVAL, errno.EBADF):
                raise
        finally:
            os.close(fd)

    def read_blob(self, checkpoint_id: str) -> bytes:
        """Return the blob's bytes. Raises CheckpointNotFoundError if there is none."""
        try:
            with open(self.path(checkpoint_id), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}") from None

    def delete_blob(self, checkpoint_id: str) -> bool:
        """Remove the blob; True if it existed."""
        try:
            os.unlink(self.path(checkpoint_id))
        except FileNotFoundError:
            return False
        return True

    def iter_blob_ids(self) -> Iterator[str]:
        """Ids of every blob file in the directory (temporary files excluded)."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.name
            if name.endswith(BLOB_SUFFIX):
                checkpoint_id = name[: -len(BLOB_SUFFIX)]
                if CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id):
                    yield checkpoint_id

    def sweep_temp_files(self, older_than: float = 3600.0) -> int:
        """Remove temporary files left by crashed writers; returns how many.

        Args:
            older_than: only files whose mtime is at least this many seconds old (by the
                wall clock, like file times) are removed, so live writes are left alone.
        """
        age = non_negative("older_than", older_than)
        cutoff = time.time() - age
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.startswith(".ck_") and entry.name.endswith(_TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed


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


class LocalCheckpointStore(CompositeCheckpointStore):
    """The default store: :class:`FileBlobStore` + :class:`SqliteMetadataIndex` in one dir.

    Args:
        directory: holds the blobs and ``index.sqlite3``.
        fsync: see :class:`FileBlobStore`.
        timeout: see :class:`SqliteMetadataIndex`.
    """

    __slots__ = ("directory", "files")

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: bool = True, timeout: float = 30.0
    ) -> None:
        self.directory = Path(directory)
        self.files = FileBlobStore(self.directory, fsync=fsync)
        super().__init__(
            self.files, SqliteMetadataIndex(self.directory / "index.sqlite3", timeout=timeout)
        )

    def __repr__(self) -> str:
        return f"LocalCheckpointStore({str(self.directory)!r})"

    def sweep_temp_files(self, older_than: float = 3600.0) -> int:
        """See :meth:`FileBlobStore.sweep_temp_files`."""
        return self.files.sweep_temp_files(older_than)
