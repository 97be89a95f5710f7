"""FileBlobStore: its directory is made durable, and made again if it disappears."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from resilience.checkpoint import FileBlobStore, StateCheckpointManager, local

CHECKPOINT_ID = "ck_00000000000001_000000000000"


def test_a_removed_directory_is_created_again_by_the_next_write(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path / "ck")
    manager.save_checkpoint({"v": 1}, "a", "w")
    manager.close()
    shutil.rmtree(tmp_path / "ck")
    checkpoint_id = manager.save_checkpoint({"v": 2}, "a", "w")
    assert manager.load_checkpoint(checkpoint_id) == {"v": 2}


def test_creating_the_directory_fsyncs_each_new_entry_s_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    store = FileBlobStore(tmp_path / "a" / "b")
    monkeypatch.setattr(store, "_fsync_directory", synced.append)
    store.write_blob(CHECKPOINT_ID, b"data")
    # "a" made in tmp_path, "b" made in "a", then the blob's rename in "b".
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    store.write_blob(CHECKPOINT_ID, b"data")
    assert synced == [tmp_path / "a" / "b"]  # an existing directory is not synced again
    assert store.read_blob(CHECKPOINT_ID) == b"data"


def test_a_blob_is_written_once_synced_then_renamed_then_its_directory_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path)
    final = store.path(CHECKPOINT_ID)
    steps: list[str] = []
    real_write, real_sync = os.write, local._datasync

    def write(fd: int, data: bytes | memoryview) -> int:
        steps.append(f"write {len(data)}")
        return real_write(fd, data)

    def datasync(fd: int) -> None:
        # The data is durable before the blob has its final name.
        steps.append("datasync" + (" (renamed too early)" if final.exists() else ""))
        real_sync(fd)

    monkeypatch.setattr(local.os, "write", write)
    monkeypatch.setattr(local, "_datasync", datasync)
    monkeypatch.setattr(store, "_fsync_directory", lambda path: steps.append(f"dir {path}"))
    data = b"x" * 300_000
    store.write_blob(CHECKPOINT_ID, data)
    assert steps[0] == f"write {len(data)}"  # one write of the whole blob (Linux)
    assert steps[-2:] == ["datasync", f"dir {tmp_path}"]
    assert store.read_blob(CHECKPOINT_ID) == data
