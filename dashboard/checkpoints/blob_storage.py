"""Checkpoint blobs in a Django storage (``DjangoStorageBlobStore``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from resilience.checkpoint import CHECKPOINT_ID_PATTERN, FileBlobStore
from resilience.errors import CheckpointError, CheckpointNotFoundError

BLOB_SUFFIX = ".ckpt"
_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


class DjangoStorageBlobStore:
    """Blobs as ``<prefix>/<checkpoint_id>.ckpt`` in a Django storage.

    FileSystemStorage (and subclasses) get resilience's ``FileBlobStore`` in that
    folder: temporary file, fsync, rename, fsync of the directory, so a blob is durable
    before its row is inserted and a reader never sees half a blob. ``Storage.save``
    would do none of that. Other storages go through ``save``/``open``/``delete``;
    object stores such as S3 make a PUT visible whole. A blob name always contains its
    id: if a storage picks another name (rename-on-conflict), the write fails loudly.

    The storage is looked up on every call, so ``STORAGES``/``MEDIA_ROOT`` overrides
    (tests) take effect at once.

    Args:
        alias: the ``STORAGES`` alias.
        prefix: the folder inside the storage (relative, no ``..``).
    """

    def __init__(self, *, alias: str = "default", prefix: str = "checkpoints") -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or ".." in prefix:
            raise ImproperlyConfigured(
                f"CHECKPOINT_STORAGE_PREFIX must be a relative folder like 'checkpoints', "
                f"got {prefix!r}"
            )
        self.alias = alias
        self.prefix = prefix
        # (storage, its location, the FileBlobStore for that folder): one FileBlobStore
        # kept while the storage and its root stay the same, so its folder is made
        # (and checked) once, not on every save.
        self._files_for: tuple[FileSystemStorage, str, FileBlobStore] | None = None

    def __repr__(self) -> str:
        return f"DjangoStorageBlobStore(alias={self.alias!r}, prefix={self.prefix!r})"

    @property
    def storage(self) -> Storage:
        return storages[self.alias]

    def name(self, checkpoint_id: str) -> str:
        """The blob's name in the storage."""
        return f"{self.prefix}/{checkpoint_id}{BLOB_SUFFIX}"

    def _files(self, storage: Storage) -> FileBlobStore | None:
        if not isinstance(storage, FileSystemStorage):
            return None
        cached = self._files_for
        location = str(storage.location)
        if cached is not None and cached[0] is storage and cached[1] == location:
            return cached[2]
        files = FileBlobStore(Path(storage.path(self.prefix)))
        self._files_for = (storage, location, files)
        return files

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        storage = self.storage
        files = self._files(storage)
        if files is not None:
            files.write_blob(checkpoint_id, data)
            return
        name = self.name(checkpoint_id)
        if storage.exists(name):  # replace, as the protocol asks; never rename
            storage.delete(name)
        saved = storage.save(name, ContentFile(data))
        if saved != name:
            with contextlib.suppress(Exception):
                storage.delete(saved)
            raise CheckpointError(
                f"storage {self.alias!r} stored checkpoint {checkpoint_id} as {saved!r} "
                f"instead of {name!r}; configure it to overwrite (e.g. file_overwrite=True)"
            )

    def read_blob(self, checkpoint_id: str) -> bytes:
        storage = self.storage
        files = self._files(storage)
        if files is not None:
            return files.read_blob(checkpoint_id)
        try:
            with storage.open(self.name(checkpoint_id), "rb") as file:
                data = file.read()
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}") from None
        return data if isinstance(data, bytes) else bytes(data)

    def delete_blob(self, checkpoint_id: str) -> bool:
        storage = self.storage
        files = self._files(storage)
        if files is not None:
            return files.delete_blob(checkpoint_id)
        name = self.name(checkpoint_id)
        if not storage.exists(name):
            return False
        storage.delete(name)
        return True

    def exists(self, checkpoint_id: str) -> bool:
        """Whether the blob exists (without reading it)."""
        storage = self.storage
        files = self._files(storage)
        if files is not None:
            return files.path(checkpoint_id).exists()
        return bool(storage.exists(self.name(checkpoint_id)))

    def modified_at(self, checkpoint_id: str) -> float | None:
        """When the blob was last written (seconds since the epoch), None if unknown."""
        storage = self.storage
        files = self._files(storage)
        try:
            if files is not None:
                return files.path(checkpoint_id).stat().st_mtime
            return storage.get_modified_time(self.name(checkpoint_id)).timestamp()
        except (NotImplementedError, OSError):
            return None

    def iter_blob_ids(self) -> Iterator[str]:
        storage = self.storage
        files = self._files(storage)
        if files is not None:
            yield from files.iter_blob_ids()
            return
        try:
            _dirs, names = storage.listdir(self.prefix)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(BLOB_SUFFIX):
                checkpoint_id = name[: -len(BLOB_SUFFIX)]
                if CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id):
                    yield checkpoint_id
