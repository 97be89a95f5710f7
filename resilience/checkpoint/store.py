"""The checkpoint storage extension point: a blob store plus a metadata index.

:class:`~resilience.checkpoint.StateCheckpointManager` owns the policy (ids,
serialization, compression, hashing and signing, ordering, cleanup rules); a store
only keeps bytes and records. Implement :class:`CheckpointStore` (all nine methods) or
combine a :class:`BlobStore` and a :class:`MetadataIndex` with
:class:`CompositeCheckpointStore`, then pass it as ``StateCheckpointManager(store=...)``.

The local default is :class:`~resilience.checkpoint.local.LocalCheckpointStore`: one
file per blob plus a SQLite (WAL) index (two syncs per save: the blob's data, then its
rename). :class:`~resilience.checkpoint.sqlite.SqliteCheckpointStore` keeps blobs and
records in one SQLite database (one sync per save). A Django project can keep blobs in Django's
storage API and records in a model, e.g.::

    class DjangoCheckpointStore:          # satisfies CheckpointStore structurally
        def write_blob(self, checkpoint_id, data):
            default_storage.save(f"checkpoints/{checkpoint_id}.ckpt", ContentFile(data))
        def read_blob(self, checkpoint_id):
            try:
                with default_storage.open(f"checkpoints/{checkpoint_id}.ckpt") as f:
                    return f.read()
            except FileNotFoundError as exc:
                raise CheckpointNotFoundError(checkpoint_id) from exc
        def add_record(self, record):
            fields = record.to_dict()
            fields.pop("ratio")  # derived: raw_size / stored_size
            Checkpoint.objects.update_or_create(
                checkpoint_id=fields.pop("checkpoint_id"), defaults=fields)
        def query_records(self, *, agent_id=None, workflow_id=None, limit=None):
            rows = Checkpoint.objects.order_by("-seq")  # + filters, [:limit]
            return [CheckpointRecord(**row) for row in rows.values(*RECORD_FIELDS)]
        ...

Contract every implementation keeps:

* ids reaching a store were validated by the manager (they match
  ``CHECKPOINT_ID_PATTERN``, so they are safe in file names and URLs);
* ``write_blob`` returns only once the blob is durable, and a reader never sees a
  partial blob (write to a temporary name, then rename); the manager calls
  ``add_record`` only after ``write_blob`` returned, so every indexed record has its blob;
* ``query_records`` returns newest first by a sequence the index assigns when it
  first adds a record (a counter, an auto-increment column), never by ``checkpoint_id``
  or ``created_at``: those follow the writers' wall clocks, which step back (NTP, VM
  restore) and differ between hosts. Replacing a record keeps its place. ``limit=None``
  means all;
* optional, for stores that can do better than the two steps: ``write_checkpoint(record,
  data)`` stores the blob and its record in one atomic, durable step (the manager then
  calls it instead of ``write_blob`` + ``add_record``), and ``delete_blobs(ids) -> int``
  removes many blobs at once (``cleanup`` uses it). See
  :class:`~resilience.checkpoint.sqlite.SqliteCheckpointStore`;
* methods may be called from several threads at once (``asave_checkpoint`` runs in a
  thread pool), and from several processes when the storage is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from resilience.errors import ConfigTypeError

__all__ = [
    "RECORD_FIELDS",
    "BlobStore",
    "CheckpointRecord",
    "CheckpointStore",
    "CompositeCheckpointStore",
    "MetadataIndex",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointRecord:
    """What the index knows about one checkpoint (also stored in the blob's header).

    Attributes:
        checkpoint_id: the id (``ck_<14 hex>_<12 hex>``).
        agent_id / workflow_id: the names the checkpoint was saved under.
        created_at: seconds since the epoch, from the manager's ``clock``.
        raw_size: bytes of the JSON state before compression.
        stored_size: bytes of the compressed payload (the blob adds a small header).
        sha256: hex SHA-256 of the compressed payload.
        codec: the name of a registered codec (``"zstd"``, ``"gzip"``, ``"none"``...).
        metadata: the caller's metadata, as plain JSON types.
    """

    checkpoint_id: str
    agent_id: str
    workflow_id: str
    created_at: float
    raw_size: int
    stored_size: int
    sha256: str
    codec: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Compression ratio ``raw_size / stored_size`` (higher is better; 1.0 if empty)."""
        return self.raw_size / self.stored_size if self.stored_size else 1.0

    def to_dict(self) -> dict[str, Any]:
        """The info dict of ``get_checkpoint_info`` / ``list_checkpoints`` items.

        Keys: checkpoint_id, agent_id, workflow_id, created_at (float seconds since
        the epoch), raw_size, stored_size, ratio (rounded to 3 places), sha256, codec,
        metadata (a copy).
        """
        return {
            "checkpoint_id": self.checkpoint_id,
            "agent_id": self.agent_id,
            "workflow_id": self.workflow_id,
            "created_at": self.created_at,
            "raw_size": self.raw_size,
            "stored_size": self.stored_size,
            "ratio": round(self.ratio, 3),
            "sha256": self.sha256,
            "codec": self.codec,
            "metadata": dict(self.metadata),
        }


RECORD_FIELDS = tuple(CheckpointRecord.__dataclass_fields__)
"""Names of the :class:`CheckpointRecord` fields, in order (handy for ORM ``values()``)."""


@runtime_checkable
class BlobStore(Protocol):
    """Keeps one opaque, self-describing blob per checkpoint id."""

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        """Store ``data`` durably and atomically under ``checkpoint_id`` (replacing any)."""
        ...

    def read_blob(self, checkpoint_id: str) -> bytes:
        """Return the blob. Raises ``CheckpointNotFoundError`` when there is none."""
        ...

    def delete_blob(self, checkpoint_id: str) -> bool:
        """Remove the blob; True if it existed. Never raises for a missing blob."""
        ...

    def iter_blob_ids(self) -> Iterable[str]:
        """Every stored blob id (any order); used by ``rebuild_index``."""
        ...


@runtime_checkable
class MetadataIndex(Protocol):
    """Answers queries about checkpoints without reading their blobs."""

    def add_record(self, record: CheckpointRecord) -> None:
        """Insert ``record`` as the newest, or replace the record with the same id
        (keeping its place in the order)."""
        ...

    def get_record(self, checkpoint_id: str) -> CheckpointRecord | None:
        """The record with this id, or None."""
        ...

    def query_records(
        self,
        *,
        agent_id: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        """Records matching the filters (None = any), newest (last added) first."""
        ...

    def remove_records(self, checkpoint_ids: Sequence[str]) -> None:
        """Remove these records; unknown ids are ignored."""
        ...


@runtime_checkable
class CheckpointStore(BlobStore, MetadataIndex, Protocol):
    """A blob store and a metadata index in one object: what the manager needs."""


class CompositeCheckpointStore:
    """A :class:`CheckpointStore` made of a separate blob store and metadata index.

    Args:
        blobs: where blob bytes go (files, Django storage, S3...).
        index: where records go (SQLite, a Django model...).
    """

    __slots__ = ("blobs", "index")

    def __init__(self, blobs: BlobStore, index: MetadataIndex) -> None:
        if not isinstance(blobs, BlobStore):
            raise ConfigTypeError(f"blobs must implement BlobStore, got {blobs!r}")
        if not isinstance(index, MetadataIndex):
            raise ConfigTypeError(f"index must implement MetadataIndex, got {index!r}")
        self.blobs = blobs
        self.index = index

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        self.blobs.write_blob(checkpoint_id, data)

    def read_blob(self, checkpoint_id: str) -> bytes:
        return self.blobs.read_blob(checkpoint_id)

    def delete_blob(self, checkpoint_id: str) -> bool:
        return self.blobs.delete_blob(checkpoint_id)

    def iter_blob_ids(self) -> Iterable[str]:
        return self.blobs.iter_blob_ids()

    def add_record(self, record: CheckpointRecord) -> None:
        self.index.add_record(record)

    def get_record(self, checkpoint_id: str) -> CheckpointRecord | None:
        return self.index.get_record(checkpoint_id)

    def query_records(
        self,
        *,
        agent_id: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:
        return self.index.query_records(agent_id=agent_id, workflow_id=workflow_id, limit=limit)

    def remove_records(self, checkpoint_ids: Sequence[str]) -> None:
        self.index.remove_records(checkpoint_ids)

    def close(self) -> None:
        """Close the parts that have a ``close`` method."""
        for part in (self.blobs, self.index):
            close = getattr(part, "close", None)
            if callable(close):
                close()
