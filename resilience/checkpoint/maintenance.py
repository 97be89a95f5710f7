"""What ``cleanup`` removes, and ``rebuild_index``'s scan: the manager's upkeep.

Both work on any :class:`~resilience.checkpoint.store.CheckpointStore`; the manager
validates their arguments and documents them
(:meth:`~resilience.checkpoint.manager.StateCheckpointManager.cleanup`,
:meth:`~resilience.checkpoint.manager.StateCheckpointManager.rebuild_index`).
"""

from __future__ import annotations

from collections.abc import Iterable

from resilience.checkpoint import blob
from resilience.checkpoint.results import RebuildResult
from resilience.checkpoint.store import CheckpointRecord, CheckpointStore
from resilience.errors import CheckpointCorruptedError, CheckpointNotFoundError

__all__ = ["rebuild", "select_for_cleanup"]


def select_for_cleanup(
    records: Iterable[CheckpointRecord], *, keep: int | None, max_age: float | None, now: float
) -> list[CheckpointRecord]:
    """The records (newest first, in the store's order) past ``keep`` in their
    (agent_id, workflow_id) group and older than ``max_age``; never a group's newest."""
    seen: dict[tuple[str, str], int] = {}
    doomed: list[CheckpointRecord] = []
    for record in records:
        group = (record.agent_id, record.workflow_id)
        rank = seen[group] = seen.get(group, 0) + 1
        if rank == 1 or (keep is not None and rank <= keep):
            continue
        if max_age is not None and now - record.created_at <= max_age:
            continue
        doomed.append(record)
    return doomed


def rebuild(store: CheckpointStore, key: bytes | None) -> RebuildResult:
    """Re-index every blob of ``store`` that verifies with ``key``; drop the rest's records."""
    before = {record.checkpoint_id for record in store.query_records()}
    valid: set[str] = set()
    corrupted: list[str] = []
    for checkpoint_id in sorted(store.iter_blob_ids()):
        try:
            data = store.read_blob(checkpoint_id)
            record, _payload = blob.unpack(data, checkpoint_id=checkpoint_id, key=key)
        except CheckpointNotFoundError:
            continue  # deleted meanwhile
        except CheckpointCorruptedError:
            corrupted.append(checkpoint_id)
            continue
        store.add_record(record)
        valid.add(checkpoint_id)
    # A blob deleted while we scanned must not come back as an unloadable record.
    remaining = set(store.iter_blob_ids())
    gone = valid - remaining
    removed = sorted((before - valid) | gone, reverse=True)
    store.remove_records(removed)
    sweep = getattr(store, "sweep_temp_files", None)
    if callable(sweep):
        sweep()
    return RebuildResult(
        indexed=len(valid - gone), corrupted=tuple(corrupted), removed=tuple(removed)
    )
