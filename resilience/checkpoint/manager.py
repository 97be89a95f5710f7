"""StateCheckpointManager: save, load, list, verify and clean up agent state checkpoints."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson

from resilience._validate import duration, positive_int
from resilience.checkpoint import blob, serialize
from resilience.checkpoint._ids import new_checkpoint_id, validate_checkpoint_id, validate_name
from resilience.checkpoint.compression import (
    DEFAULT_MAX_STATE_SIZE,
    compress,
    decompress,
    resolve_codec,
)
from resilience.checkpoint.local import LocalCheckpointStore
from resilience.checkpoint.maintenance import rebuild, select_for_cleanup
from resilience.checkpoint.results import CleanupResult, RebuildResult
from resilience.checkpoint.store import CheckpointRecord, CheckpointStore
from resilience.errors import (
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigTypeError,
    ConfigValueError,
)
from resilience.events import CheckpointCorrupted, CheckpointSaved, bus

__all__ = ["StateCheckpointManager"]


def _signing_key(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray):
        raise ConfigTypeError(f"signing_key must be bytes, str or None, got {type(value)!r}")
    if not value:
        raise ConfigValueError("signing_key must not be empty")
    return bytes(value)


def _optional(store: object, name: str) -> Any:
    method = getattr(store, name, None)
    return method if callable(method) else None


class StateCheckpointManager:
    """Saves agent/workflow state as verified, compressed JSON checkpoints.

    Every checkpoint is one self-describing blob (see :mod:`resilience.checkpoint.blob`)
    plus one index record. Saves are atomic and durable; every load checks the SHA-256
    (and the HMAC when ``signing_key`` is set) before decompressing or decoding.
    State is stored as JSON (see :mod:`resilience.checkpoint.serialize` for conversions);
    nothing is ever unpickled.

    Args:
        checkpoint_dir: directory of the default :class:`LocalCheckpointStore`; ignored
            when ``store`` is given. Nothing is created until the first save or query.
        compression: ``True``/``"zstd"`` (default), ``"gzip"``, ``False``/``"none"``,
            or the name of any codec added with
            :func:`~resilience.checkpoint.register_codec`. Only affects new saves: each
            blob records its own codec.
        signing_key: bytes or str; when set, new blobs carry an HMAC-SHA256 and loads
            reject blobs without a valid one.
        store: any :class:`CheckpointStore` (e.g. a Django-backed one).
        clock: wall-clock seconds since the epoch, for ``created_at`` and ``older_than``.
        max_state_size: bytes of serialized state a checkpoint may hold (default 256
            MiB). A save above it raises ``CheckpointError``; a blob whose header
            claims more is refused as corrupted before anything is decompressed.

    Raises:
        ConfigValueError: invalid ``compression`` or an empty ``signing_key``.
        ConfigTypeError: ``signing_key``, ``store`` or ``clock`` of the wrong type.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str] = "./checkpoints",
        compression: bool | str = True,
        *,
        signing_key: bytes | str | None = None,
        store: CheckpointStore | None = None,
        clock: Callable[[], float] = time.time,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self.codec = resolve_codec(compression)
        self.max_state_size = positive_int("max_state_size", max_state_size)
        self._key = _signing_key(signing_key)
        if store is None:
            store = LocalCheckpointStore(checkpoint_dir)
        elif not isinstance(store, CheckpointStore):
            raise ConfigTypeError(f"store must implement CheckpointStore, got {store!r}")
        if not callable(clock):
            raise ConfigTypeError(f"clock must be callable, got {clock!r}")
        self.store: CheckpointStore = store
        self.clock = clock
        # Optional store methods (see resilience.checkpoint.store): one commit per save,
        # one per cleanup.
        self._write_checkpoint: Callable[[CheckpointRecord, bytes], None] | None = _optional(
            store, "write_checkpoint"
        )
        self._delete_blobs: Callable[[Sequence[str]], int] | None = _optional(store, "delete_blobs")

    def __repr__(self) -> str:
        signed = ", signed" if self._key else ""
        return f"StateCheckpointManager({self.store!r}, codec={self.codec!r}{signed})"

    def close(self) -> None:
        """Close the store's resources (database connections) if it has a ``close``."""
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    @property
    def signed(self) -> bool:
        """True when a signing key is configured."""
        return self._key is not None

    # -- save / load -----------------------------------------------------------------

    def save_checkpoint(
        self,
        state: object,
        agent_id: str,
        workflow_id: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Serialize, compress, hash (and sign) ``state``, store it durably, index it.

        Args:
            state: JSON-compatible data (see :mod:`resilience.checkpoint.serialize`).
            agent_id: 1-128 of ``A-Z a-z 0-9 _ . : @ -``, starting alphanumeric.
            workflow_id: same rules as ``agent_id``.
            metadata: small JSON-compatible dict kept in the index (str keys).

        Raises:
            TypeError: a value in ``state`` or ``metadata`` cannot be stored; the
                message names its path, e.g. ``state["tools"][3]["fn"]``.
            CheckpointError: the serialized state is above ``max_state_size``.
            ConfigValueError / ConfigTypeError: invalid ``agent_id`` or ``workflow_id``.
            OSError / store errors: the write failed; nothing was indexed.

        Returns:
            The new checkpoint id. It is now the latest of its group (the store's
            order), whatever the clock says.
        """
        validate_name("agent_id", agent_id)
        validate_name("workflow_id", workflow_id)
        if metadata is None:
            meta: dict[str, Any] = {}
        elif isinstance(metadata, Mapping):
            meta = serialize.loads(serialize.dumps(dict(metadata), root="metadata"))
        else:
            raise ConfigTypeError(f"metadata must be a mapping or None, got {type(metadata)!r}")
        raw = serialize.dumps(state)
        if len(raw) > self.max_state_size:
            raise CheckpointError(
                f"state is {len(raw)} bytes serialized, above max_state_size "
                f"({self.max_state_size})"
            )
        payload = compress(self.codec, raw)
        created_at = float(self.clock())
        record = CheckpointRecord(
            checkpoint_id=new_checkpoint_id(created_at),
            agent_id=agent_id,
            workflow_id=workflow_id,
            created_at=created_at,
            raw_size=len(raw),
            stored_size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            codec=self.codec,
            metadata=meta,
        )
        data = blob.pack(record, payload, self._key)
        if self._write_checkpoint is not None:
            self._write_checkpoint(record, data)  # blob and record in one durable commit
        else:
            self.store.write_blob(record.checkpoint_id, data)
            self.store.add_record(record)  # only once the blob is durable
        if bus.active:
            bus.publish(
                CheckpointSaved(
                    name=record.checkpoint_id,
                    time=created_at,
                    agent_id=agent_id,
                    workflow_id=workflow_id,
                    raw_size=record.raw_size,
                    stored_size=record.stored_size,
                    codec=record.codec,
                    metadata=dict(meta),
                )
            )
        return record.checkpoint_id

    def load_checkpoint(self, checkpoint_id: str) -> Any:
        """Return the state saved as ``checkpoint_id``, as plain JSON types.

        Raises:
            ConfigValueError / ConfigTypeError: a malformed id (the store is not touched).
            CheckpointNotFoundError: no such checkpoint.
            CheckpointCorruptedError: it failed verification; nothing was decoded.
        """
        _record, raw = self._read_verified(checkpoint_id)
        try:
            return serialize.loads(raw)
        except orjson.JSONDecodeError as exc:  # only reachable if a signed writer erred
            error = CheckpointCorruptedError(f"checkpoint {checkpoint_id}: bad JSON")
            self._report(checkpoint_id, error)
            raise error from exc

    async def asave_checkpoint(
        self,
        state: object,
        agent_id: str,
        workflow_id: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """:meth:`save_checkpoint` in a worker thread (``asyncio.to_thread``).

        Don't mutate ``state`` until this returns: it is serialized in the thread.
        """
        return await asyncio.to_thread(self.save_checkpoint, state, agent_id, workflow_id, metadata)

    async def aload_checkpoint(self, checkpoint_id: str) -> Any:
        """:meth:`load_checkpoint` in a worker thread (``asyncio.to_thread``)."""
        return await asyncio.to_thread(self.load_checkpoint, checkpoint_id)

    def _read_verified(self, checkpoint_id: str) -> tuple[CheckpointRecord, bytes]:
        validate_checkpoint_id(checkpoint_id)
        data = self.store.read_blob(checkpoint_id)
        try:
            record, payload = blob.unpack(data, checkpoint_id=checkpoint_id, key=self._key)
            try:
                raw = decompress(record.codec, payload, record.raw_size, self.max_state_size)
            except ValueError as exc:
                raise CheckpointCorruptedError(f"checkpoint {checkpoint_id}: {exc}") from exc
        except CheckpointCorruptedError as error:
            self._report(checkpoint_id, error)
            raise
        return record, raw

    def _report(self, checkpoint_id: str, error: CheckpointCorruptedError) -> None:
        """Tell listeners (alerting) that a checkpoint failed verification."""
        if bus.active:
            event = CheckpointCorrupted(name=checkpoint_id, time=self.clock(), reason=str(error))
            bus.publish(event)

    # -- queries ---------------------------------------------------------------------

    def get_checkpoint_info(self, checkpoint_id: str) -> dict[str, Any]:
        """The index's info dict for one checkpoint (see :meth:`CheckpointRecord.to_dict`).

        Raises:
            ConfigValueError / ConfigTypeError: a malformed id.
            CheckpointNotFoundError: not in the index.
        """
        return self._get_record(checkpoint_id).to_dict()

    def _get_record(self, checkpoint_id: str) -> CheckpointRecord:
        validate_checkpoint_id(checkpoint_id)
        record = self.store.get_record(checkpoint_id)
        if record is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}")
        return record

    def get_latest_checkpoint(
        self, agent_id: str | None = None, workflow_id: str | None = None
    ) -> str | None:
        """The id of the newest checkpoint matching the filters, or None."""
        records = self._query(agent_id, workflow_id, 1)
        return records[0].checkpoint_id if records else None

    def list_checkpoints(
        self,
        agent_id: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Info dicts of matching checkpoints, newest first.

        Args:
            agent_id / workflow_id: filters; None matches any.
            limit: at most this many (>= 1); None for all.

        Raises:
            ConfigValueError / ConfigTypeError: a malformed filter or limit.
        """
        if limit is not None:
            positive_int("limit", limit)
        return [record.to_dict() for record in self._query(agent_id, workflow_id, limit)]

    def _query(
        self, agent_id: str | None, workflow_id: str | None, limit: int | None
    ) -> list[CheckpointRecord]:
        if agent_id is not None:
            validate_name("agent_id", agent_id)
        if workflow_id is not None:
            validate_name("workflow_id", workflow_id)
        return self.store.query_records(agent_id=agent_id, workflow_id=workflow_id, limit=limit)

    def verify_checkpoint(self, checkpoint_id: str) -> bool:
        """Check a checkpoint fully without returning it.

        True when the blob verifies (hashes, HMAC if keyed, decompression) and agrees
        with its index record (when it has one).

        Raises:
            ConfigValueError / ConfigTypeError: a malformed id.
            CheckpointNotFoundError: no blob with this id.
        """
        try:
            record, _raw = self._read_verified(checkpoint_id)
        except CheckpointCorruptedError:
            return False
        indexed = self.store.get_record(checkpoint_id)
        if indexed is None or indexed == record:
            return True
        self._report(checkpoint_id, CheckpointCorruptedError("index record differs from blob"))
        return False

    # -- removal ---------------------------------------------------------------------

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Remove a checkpoint: index record, blob, then the record again.

        Record first, so a crash in between leaves a blob (``rebuild_index`` restores
        it), never a record without one. The second removal undoes a concurrent
        ``rebuild_index`` that read the blob before it went and indexed it again.

        Raises:
            ConfigValueError / ConfigTypeError: a malformed id.
            CheckpointNotFoundError: neither a record nor a blob existed.
        """
        validate_checkpoint_id(checkpoint_id)
        indexed = self.store.get_record(checkpoint_id) is not None
        self.store.remove_records([checkpoint_id])
        existed = self.store.delete_blob(checkpoint_id)
        self.store.remove_records([checkpoint_id])
        if not existed and not indexed:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}")

    def cleanup(
        self,
        keep_last: int | None = None,
        older_than: float | timedelta | None = None,
        dry_run: bool = False,
    ) -> CleanupResult:
        """Remove old checkpoints, per (agent_id, workflow_id) group.

        A checkpoint is removed when it is not among the newest ``keep_last`` of its
        group (if ``keep_last`` is given) AND it is older than ``older_than`` (if given).
        So ``keep_last`` alone keeps the newest N per group; ``older_than`` alone drops
        everything older but the newest of each group; both together drop old
        checkpoints but always keep the newest N. "Newest" is the store's save order,
        not ``created_at``, so a clock that stepped back never costs the latest state.

        Args:
            keep_last: checkpoints to keep per group, >= 1.
            older_than: seconds or a ``timedelta``; "older" means
                ``clock() - created_at > older_than``.
            dry_run: only report what would be removed.

        Raises:
            ConfigValueError / ConfigTypeError: invalid arguments, or neither given.

        Returns:
            A :class:`CleanupResult`.
        """
        if keep_last is None and older_than is None:
            raise ConfigValueError("cleanup needs keep_last and/or older_than, got neither")
        keep = None if keep_last is None else positive_int("keep_last", keep_last)
        max_age = None if older_than is None else duration("older_than", older_than)
        doomed = select_for_cleanup(
            self.store.query_records(), keep=keep, max_age=max_age, now=float(self.clock())
        )
        ids = tuple(record.checkpoint_id for record in doomed)
        if not dry_run and ids:
            self.store.remove_records(ids)
            if self._delete_blobs is not None:
                self._delete_blobs(ids)
            else:
                for checkpoint_id in ids:
                    self.store.delete_blob(checkpoint_id)
            self.store.remove_records(ids)  # see delete_checkpoint
        return CleanupResult(
            checkpoint_ids=ids,
            count=len(ids),
            stored_bytes=sum(record.stored_size for record in doomed),
            dry_run=dry_run,
        )

    def rebuild_index(self) -> RebuildResult:
        """Re-create the index from the blobs alone.

        Every blob is verified (hashes, and the HMAC when a key is set); valid ones are
        (re-)indexed, corrupted ones are reported and left in place, and records whose
        blob is missing or corrupted are removed. Concurrent saves are safe. With the
        local store, temporary files older than an hour are removed too.

        Returns:
            A :class:`RebuildResult`.
        """
        return rebuild(self.store, self._key)
