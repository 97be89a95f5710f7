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
import time
from collections.abc import Iterator
from pathlib import Path

from resilience._validate import non_negative
from resilience.checkpoint._ids import CHECKPOINT_ID_PATTERN, validate_checkpoint_id
from resilience.checkpoint.sqlite_index import SqliteMetadataIndex
from resilience.checkpoint.store import CompositeCheckpointStore
from resilience.errors import CheckpointNotFoundError

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
