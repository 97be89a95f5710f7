"""rebuild_index interleaved with delete_checkpoint leaves no record without a blob."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from resilience.checkpoint import LocalCheckpointStore, StateCheckpointManager
from resilience.checkpoint.store import CheckpointRecord


class Interleaved(LocalCheckpointStore):
    """Runs a deleting thread and a rebuild in the worst order for the index.

    The deleter removes the record, then waits before it removes the blob until the
    rebuild (which read the blob before) has re-added the record and finished.
    """

    __slots__ = ("deleter", "record_removed", "rebuild_done")

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.deleter: threading.Thread | None = None
        self.record_removed = threading.Event()
        self.rebuild_done = threading.Event()

    def _in_deleter(self) -> bool:
        return threading.current_thread() is self.deleter

    def remove_records(self, checkpoint_ids: Sequence[str]) -> None:
        super().remove_records(checkpoint_ids)
        if self._in_deleter():
            self.record_removed.set()

    def add_record(self, record: CheckpointRecord) -> None:
        if self.deleter is not None and not self._in_deleter():
            assert self.record_removed.wait(5)
        super().add_record(record)

    def delete_blob(self, checkpoint_id: str) -> bool:
        if self._in_deleter():
            assert self.rebuild_done.wait(5)
        return super().delete_blob(checkpoint_id)


def test_a_checkpoint_deleted_during_rebuild_index_stays_deleted(tmp_path: Path) -> None:
    store = Interleaved(tmp_path)
    manager = StateCheckpointManager(store=store)
    kept = manager.save_checkpoint({"v": 1}, "a", "w")
    doomed = manager.save_checkpoint({"v": 2}, "a", "w")
    store.deleter = threading.Thread(target=manager.delete_checkpoint, args=(doomed,))
    store.deleter.start()
    manager.rebuild_index()
    store.rebuild_done.set()
    store.deleter.join(5)
    assert store.get_record(doomed) is None
    latest = manager.get_latest_checkpoint("a", "w")
    assert latest == kept
    assert manager.load_checkpoint(latest) == {"v": 1}
