"""Checkpoint size bounds: a blob may not expand past ``max_state_size``."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import zstandard

from resilience.checkpoint import StateCheckpointManager, compression
from resilience.checkpoint import blob as blob_format
from resilience.checkpoint.compression import DEFAULT_MAX_STATE_SIZE
from resilience.errors import CheckpointCorruptedError, CheckpointError, ConfigValueError
from tests.resilience.checkpoint_support import STATE, blob_path


def zstd_zeros(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes that declares its size, built in chunks."""
    compressor = zstandard.ZstdCompressor().compressobj(size=size)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(compressor.flush())
    return b"".join(parts)


def plant(manager: StateCheckpointManager, codec: str, payload: bytes, raw_size: int) -> str:
    """Replace a real checkpoint's blob by one whose hashes verify (no key is needed)."""
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    record = manager.store.get_record(checkpoint_id)
    assert record is not None
    bomb = dataclasses.replace(
        record,
        codec=codec,
        raw_size=raw_size,
        stored_size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    blob_path(manager, checkpoint_id).write_bytes(blob_format.pack(bomb, payload, None))
    return checkpoint_id


def test_a_decompression_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path)
    size = DEFAULT_MAX_STATE_SIZE + (16 << 20)
    payload = zstd_zeros(size)  # a few kB that expand to 272 MiB
    checkpoint_id = plant(manager, "zstd", payload, size)
    assert manager.verify_checkpoint(checkpoint_id) is False
    with pytest.raises(CheckpointCorruptedError, match="above the 268435456 allowed"):
        manager.load_checkpoint(checkpoint_id)


def test_a_gzip_bomb_is_refused_by_a_configured_bound(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path, max_state_size=64 * 1024)
    payload = gzip.compress(bytes(1 << 20))
    checkpoint_id = plant(manager, "gzip", payload, 1 << 20)
    assert manager.verify_checkpoint(checkpoint_id) is False
    with pytest.raises(CheckpointCorruptedError, match="allowed"):
        manager.load_checkpoint(checkpoint_id)


def test_a_state_above_the_bound_is_not_saved(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path, max_state_size=1024)
    with pytest.raises(CheckpointError, match="max_state_size"):
        manager.save_checkpoint({"text": "x" * 2000}, "a", "w")
    assert manager.list_checkpoints() == []
    checkpoint_id = manager.save_checkpoint({"text": "small"}, "a", "w")
    assert manager.load_checkpoint(checkpoint_id) == {"text": "small"}


def test_max_state_size_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="max_state_size"):
        StateCheckpointManager(tmp_path, max_state_size=0)


def test_a_large_state_compressed_by_worker_threads_is_one_verified_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The threaded path must keep the format: one frame that declares its content size
    # (decompress refuses a frame whose declared size disagrees with the header).
    monkeypatch.setattr(compression, "ZSTD_THREADS_MIN_SIZE", 1024)
    monkeypatch.setattr(compression, "ZSTD_THREADS", 2)
    data = b"".join(b"step %d of a long agent run; " % i for i in range(20_000))
    packed = compression.compress("zstd", data)
    assert zstandard.frame_content_size(packed) == len(data)
    assert compression.decompress("zstd", packed, len(data)) == data
    manager = StateCheckpointManager(tmp_path, compression="zstd")
    state = {"log": data.decode()}
    checkpoint_id = manager.save_checkpoint(state, "agent", "wf")
    assert manager.load_checkpoint(checkpoint_id) == state
    assert manager.get_checkpoint_info(checkpoint_id)["stored_size"] < len(data) // 4
