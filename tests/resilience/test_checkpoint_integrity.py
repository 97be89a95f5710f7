"""Integrity: hashes, HMAC, corrupted blobs, verify_checkpoint and rebuild_index."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from pathlib import Path

import orjson
import pytest

from resilience.checkpoint import (
    LocalCheckpointStore,
    StateCheckpointManager,
)
from resilience.checkpoint import blob as blob_format
from resilience.errors import (
    CheckpointCorruptedError,
)
from tests.clock import FakeClock
from tests.resilience.checkpoint_support import STATE, blob_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> StateCheckpointManager:
    return StateCheckpointManager(tmp_path / "ck", clock=clock)


def remaining(manager: StateCheckpointManager) -> set[str]:
    return {info["checkpoint_id"] for info in manager.list_checkpoints()}


# -- integrity -------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["payload_end", "payload_start", "header", "magic", "digest"])
def test_a_flipped_byte_anywhere_raises_corrupted_error(
    manager: StateCheckpointManager, where: str
) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    path = blob_path(manager, checkpoint_id)
    stored = manager.get_checkpoint_info(checkpoint_id)["stored_size"]
    size = path.stat().st_size
    offset = {
        "payload_end": size - 1,
        "payload_start": size - stored,
        "header": size - stored - 5,
        "magic": 0,
        "digest": 12,
    }[where]
    flip_byte(path, offset)
    with pytest.raises(CheckpointCorruptedError):
        manager.load_checkpoint(checkpoint_id)
    assert manager.verify_checkpoint(checkpoint_id) is False


def test_a_failed_verification_is_published_for_alerting(
    manager: StateCheckpointManager,
) -> None:
    from resilience.events import CheckpointCorrupted, Event, bus

    seen: list[Event] = []
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    intact = manager.save_checkpoint(STATE, "a", "w")
    path = blob_path(manager, checkpoint_id)
    flip_byte(path, path.stat().st_size - 1)
    unsubscribe = bus.subscribe(seen.append)
    try:
        manager.load_checkpoint(intact)
        with pytest.raises(CheckpointCorruptedError):
            manager.load_checkpoint(checkpoint_id)
        assert manager.verify_checkpoint(checkpoint_id) is False
    finally:
        unsubscribe()
    corrupted = [e for e in seen if isinstance(e, CheckpointCorrupted)]
    assert [e.name for e in corrupted] == [checkpoint_id, checkpoint_id]
    assert all(checkpoint_id in e.reason for e in corrupted)


def test_a_truncated_blob_raises_corrupted_error(manager: StateCheckpointManager) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    path = blob_path(manager, checkpoint_id)
    for length in (0, 10, path.stat().st_size - 1):
        path.write_bytes(blob_path(manager, checkpoint_id).read_bytes()[:length])
        with pytest.raises(CheckpointCorruptedError):
            manager.load_checkpoint(checkpoint_id)


def test_a_blob_moved_under_another_id_is_detected(manager: StateCheckpointManager) -> None:
    first = manager.save_checkpoint({"n": 1}, "a", "w")
    second = manager.save_checkpoint({"n": 2}, "a", "w")
    blob_path(manager, second).write_bytes(blob_path(manager, first).read_bytes())
    with pytest.raises(CheckpointCorruptedError, match="another checkpoint"):
        manager.load_checkpoint(second)


def rewrite_with_fresh_hashes(path: Path, new_state: bytes) -> None:
    """What an attacker without the key can do: replace the payload, fix every hash."""
    data = path.read_bytes()
    magic, version, flags, header_len = struct.unpack_from(">4sBBI", data)
    start = 10 + 32 + (32 if flags & 1 else 0)
    header = orjson.loads(data[start : start + header_len])
    header.update(codec="none", raw_size=len(new_state), stored_size=len(new_state))
    header["sha256"] = hashlib.sha256(new_state).hexdigest()
    new_header = orjson.dumps(header)
    prefix = struct.pack(">4sBBI", magic, version, flags, len(new_header))
    mac = data[42:74] if flags & 1 else b""
    path.write_bytes(prefix + hashlib.sha256(new_header).digest() + mac + new_header + new_state)


def test_a_rewritten_blob_with_fresh_hashes_fools_sha256_alone(
    manager: StateCheckpointManager,
) -> None:
    checkpoint_id = manager.save_checkpoint({"admin": False}, "a", "w")
    rewrite_with_fresh_hashes(blob_path(manager, checkpoint_id), b'{"admin":true}')
    # Without a key, only accidental corruption is detected; that is why keys exist.
    assert manager.load_checkpoint(checkpoint_id) == {"admin": True}


def test_a_rewritten_blob_with_fresh_hashes_is_detected_with_a_signing_key(
    tmp_path: Path,
) -> None:
    manager = StateCheckpointManager(tmp_path, signing_key="s3cret")
    checkpoint_id = manager.save_checkpoint({"admin": False}, "a", "w")
    assert manager.load_checkpoint(checkpoint_id) == {"admin": False}
    rewrite_with_fresh_hashes(blob_path(manager, checkpoint_id), b'{"admin":true}')
    with pytest.raises(CheckpointCorruptedError, match="HMAC mismatch"):
        manager.load_checkpoint(checkpoint_id)
    assert manager.verify_checkpoint(checkpoint_id) is False


def test_an_unsigned_blob_is_rejected_when_a_key_is_configured(tmp_path: Path) -> None:
    checkpoint_id = StateCheckpointManager(tmp_path).save_checkpoint(STATE, "a", "w")
    signed = StateCheckpointManager(tmp_path, signing_key=b"key")
    with pytest.raises(CheckpointCorruptedError, match="no HMAC"):
        signed.load_checkpoint(checkpoint_id)


def test_a_blob_signed_with_another_key_is_rejected(tmp_path: Path) -> None:
    checkpoint_id = StateCheckpointManager(tmp_path, signing_key=b"one").save_checkpoint(
        STATE, "a", "w"
    )
    assert StateCheckpointManager(tmp_path, signing_key=b"one").verify_checkpoint(checkpoint_id)
    with pytest.raises(CheckpointCorruptedError, match="HMAC"):
        StateCheckpointManager(tmp_path, signing_key=b"two").load_checkpoint(checkpoint_id)


def test_a_zstd_frame_claiming_another_size_is_refused_before_decompressing(
    manager: StateCheckpointManager,
) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    record = manager.store.get_record(checkpoint_id)
    assert record is not None
    path = blob_path(manager, checkpoint_id)
    payload = path.read_bytes()[-record.stored_size :]
    lying = dataclasses.replace(record, raw_size=10**6)
    path.write_bytes(blob_format.pack(lying, payload, None))
    with pytest.raises(CheckpointCorruptedError, match="frame declares"):
        manager.load_checkpoint(checkpoint_id)


# -- rebuild_index ---------------------------------------------------------------------


def test_rebuild_index_recreates_the_index_from_blobs_alone(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path, signing_key=b"k")
    ids = [manager.save_checkpoint({"i": i}, "a", f"w{i % 2}", {"i": i}) for i in range(5)]
    before = manager.list_checkpoints()
    store = manager.store
    assert isinstance(store, LocalCheckpointStore)
    store.close()
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    fresh = StateCheckpointManager(tmp_path, signing_key=b"k")
    assert fresh.list_checkpoints() == []
    result = fresh.rebuild_index()
    assert result.indexed == 5 and result.corrupted == () and result.removed == ()
    assert fresh.list_checkpoints() == before
    assert fresh.get_latest_checkpoint("a", "w0") == ids[4]


def test_rebuild_index_drops_corrupted_and_missing_blobs(
    manager: StateCheckpointManager,
) -> None:
    good, bad, missing = (manager.save_checkpoint({"i": i}, "a", "w") for i in range(3))
    flip_byte(blob_path(manager, bad), -1)
    blob_path(manager, missing).unlink()
    stray = blob_path(manager, good).parent / ".ck_x.1234.tmp"
    stray.write_bytes(b"partial")
    os.utime(stray, (0, 0))
    result = manager.rebuild_index()
    assert result.indexed == 1
    assert result.corrupted == (bad,)
    assert set(result.removed) == {bad, missing}
    assert remaining(manager) == {good}
    assert not stray.exists()
    assert result.to_dict()["corrupted"] == [bad]


def test_verify_checkpoint_is_true_for_an_intact_checkpoint(
    manager: StateCheckpointManager,
) -> None:
    assert manager.verify_checkpoint(manager.save_checkpoint(STATE, "a", "w")) is True


def test_an_orphan_blob_loads_and_is_indexed_by_rebuild(manager: StateCheckpointManager) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    manager.store.remove_records([checkpoint_id])  # as if the writer died before indexing
    assert manager.get_latest_checkpoint() is None
    assert manager.load_checkpoint(checkpoint_id) == STATE
    assert manager.rebuild_index().indexed == 1
    assert manager.get_latest_checkpoint() == checkpoint_id
