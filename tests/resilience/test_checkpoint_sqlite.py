"""SqliteCheckpointStore: blobs and records in one SQLite commit (one sync per save)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from resilience.checkpoint import (
    CheckpointStore,
    SqliteCheckpointStore,
    StateCheckpointManager,
    serialize,
)
from resilience.checkpoint import blob as blob_format
from resilience.checkpoint import manager as manager_module
from resilience.checkpoint.sqlite import DATABASE_NAME
from resilience.errors import (
    CheckpointCorruptedError,
    CheckpointNotFoundError,
    ConfigValueError,
)
from tests.clock import FakeClock
from tests.resilience.checkpoint_support import STATE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


def make(directory: Path, clock: FakeClock | None = None, **kwargs: Any) -> StateCheckpointManager:
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return StateCheckpointManager(store=SqliteCheckpointStore(directory), **options, **kwargs)


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> StateCheckpointManager:
    return make(tmp_path / "ck", clock)


def db(directory: Path) -> sqlite3.Connection:
    return sqlite3.connect(directory / DATABASE_NAME, isolation_level=None)


def stored_blob(directory: Path, checkpoint_id: str) -> bytes:
    conn = db(directory)
    try:
        (data,) = conn.execute(
            "SELECT data FROM blobs WHERE checkpoint_id = ?", (checkpoint_id,)
        ).fetchone()
    finally:
        conn.close()
    return bytes(data)


def replace_blob(directory: Path, checkpoint_id: str, data: bytes) -> None:
    conn = db(directory)
    try:
        conn.execute("UPDATE blobs SET data = ? WHERE checkpoint_id = ?", (data, checkpoint_id))
    finally:
        conn.close()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything is decompressed or parsed."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("decoded an unverified blob")

    monkeypatch.setattr(manager_module, "decompress", refuse)
    monkeypatch.setattr(serialize, "loads", refuse)


# -- round trip ----------------------------------------------------------------------


def test_it_is_a_checkpoint_store_and_creates_nothing_until_used(tmp_path: Path) -> None:
    store = SqliteCheckpointStore(tmp_path / "ck")
    assert isinstance(store, CheckpointStore)
    assert not (tmp_path / "ck").exists()
    assert "ck" in repr(store)


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_round_trip_with_every_codec_signed_or_not(
    tmp_path: Path, clock: FakeClock, codec: str, key: bytes | None
) -> None:
    manager = make(tmp_path / "ck", clock, compression=codec, signing_key=key)
    checkpoint_id = manager.save_checkpoint(STATE, "agent", "wf", {"step": 3})
    assert manager.load_checkpoint(checkpoint_id) == STATE
    assert manager.verify_checkpoint(checkpoint_id)
    info = manager.get_checkpoint_info(checkpoint_id)
    assert info["codec"] == codec
    assert info["metadata"] == {"step": 3}
    assert info["created_at"] == clock()
    data = stored_blob(tmp_path / "ck", checkpoint_id)
    record, payload = blob_format.unpack(data, checkpoint_id=checkpoint_id, key=key)
    assert record == manager.store.get_record(checkpoint_id)
    assert hashlib.sha256(payload).hexdigest() == info["sha256"]


def test_a_new_database_uses_wal_full_sync_and_the_configured_page_size(tmp_path: Path) -> None:
    store = SqliteCheckpointStore(tmp_path, page_size=8192)
    StateCheckpointManager(store=store).save_checkpoint(STATE, "a", "w")
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
    store.close()
    # An existing database keeps its page size.
    again = SqliteCheckpointStore(tmp_path, page_size=65536)
    assert again._connection().execute("PRAGMA page_size").fetchone()[0] == 8192
    again.close()


@pytest.mark.parametrize("page_size", [0, 1000, 131072, True, 4096.0, "4096"])
def test_a_bad_page_size_is_refused(tmp_path: Path, page_size: object) -> None:
    with pytest.raises(ConfigValueError, match="page_size"):
        SqliteCheckpointStore(tmp_path, page_size=page_size)  # type: ignore[arg-type]


def test_saves_are_ordered_by_the_store_not_the_clock(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    first = manager.save_checkpoint({"n": 1}, "a", "w")
    clock.advance(-3600)  # the wall clock steps back
    second = manager.save_checkpoint({"n": 2}, "a", "w")
    assert manager.get_latest_checkpoint("a", "w") == second
    assert [i["checkpoint_id"] for i in manager.list_checkpoints()] == [second, first]


# -- one commit per save ---------------------------------------------------------------


def test_a_save_writes_blob_and_record_in_one_transaction(tmp_path: Path) -> None:
    manager = make(tmp_path / "ck")
    manager.save_checkpoint(STATE, "a", "w")  # creates the database
    conn = db(tmp_path / "ck")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON checkpoints "
        "BEGIN SELECT RAISE(ABORT, 'index refused'); END"
    )
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="index refused"):
        manager.save_checkpoint({"lost": True}, "a", "w")
    # The blob of the failed save was rolled back with its record.
    assert len(list(manager.store.iter_blob_ids())) == 1
    assert len(manager.list_checkpoints()) == 1
    # The connection is usable afterwards (no transaction left open).
    conn = db(tmp_path / "ck")
    conn.execute("DROP TRIGGER refuse")
    conn.close()
    assert manager.load_checkpoint(manager.save_checkpoint({"n": 2}, "a", "w")) == {"n": 2}


def test_the_manager_saves_through_write_checkpoint(
    manager: StateCheckpointManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = manager.store
    assert isinstance(store, SqliteCheckpointStore)

    def refuse(*args: object) -> None:
        raise AssertionError("two-step save")

    monkeypatch.setattr(store, "write_blob", refuse)
    monkeypatch.setattr(store, "add_record", refuse)
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    assert manager.load_checkpoint(checkpoint_id) == STATE


def test_write_blob_and_add_record_also_work_one_at_a_time(
    manager: StateCheckpointManager, tmp_path: Path
) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    record = manager.store.get_record(checkpoint_id)
    assert record is not None
    data = stored_blob(tmp_path / "ck", checkpoint_id)
    other = make(tmp_path / "other")
    other.store.write_blob(checkpoint_id, data)
    assert other.list_checkpoints() == []
    other.store.add_record(record)
    assert other.load_checkpoint(checkpoint_id) == STATE
    assert other.get_checkpoint_info(checkpoint_id) == manager.get_checkpoint_info(checkpoint_id)


# -- verification before decoding ------------------------------------------------------


@pytest.mark.parametrize("where", ["payload_end", "payload_start", "header", "magic"])
def test_a_flipped_byte_in_the_database_is_refused_before_decoding(
    manager: StateCheckpointManager, tmp_path: Path, where: str, no_decoding: None
) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    data = bytearray(stored_blob(tmp_path / "ck", checkpoint_id))
    stored = manager.get_checkpoint_info(checkpoint_id)["stored_size"]
    offset = {
        "payload_end": len(data) - 1,
        "payload_start": len(data) - stored,
        "header": len(data) - stored - 5,
        "magic": 0,
    }[where]
    data[offset] ^= 0x01
    replace_blob(tmp_path / "ck", checkpoint_id, bytes(data))
    with pytest.raises(CheckpointCorruptedError):
        manager.load_checkpoint(checkpoint_id)
    assert manager.verify_checkpoint(checkpoint_id) is False


@pytest.mark.parametrize("keep", [0, 10, 41, -1])
def test_a_truncated_blob_is_refused_before_decoding(
    manager: StateCheckpointManager, tmp_path: Path, keep: int, no_decoding: None
) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    data = stored_blob(tmp_path / "ck", checkpoint_id)
    replace_blob(tmp_path / "ck", checkpoint_id, data[:keep])
    with pytest.raises(CheckpointCorruptedError):
        manager.load_checkpoint(checkpoint_id)


def test_a_crafted_blob_with_fresh_hashes_is_refused_when_signed(
    tmp_path: Path, no_decoding: None
) -> None:
    manager = make(tmp_path / "ck", signing_key=b"secret")
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    record = manager.store.get_record(checkpoint_id)
    assert record is not None
    payload = b"{}"
    forged = dataclasses.replace(
        record, codec="none", raw_size=2, stored_size=2, sha256=hashlib.sha256(payload).hexdigest()
    )
    replace_blob(tmp_path / "ck", checkpoint_id, blob_format.pack(forged, payload, None))
    with pytest.raises(CheckpointCorruptedError, match="HMAC"):
        manager.load_checkpoint(checkpoint_id)
    replace_blob(tmp_path / "ck", checkpoint_id, blob_format.pack(forged, payload, b"wrong"))
    with pytest.raises(CheckpointCorruptedError, match="HMAC"):
        manager.load_checkpoint(checkpoint_id)


def test_a_crafted_blob_claiming_a_huge_state_is_refused_before_decompressing(
    tmp_path: Path,
) -> None:
    manager = make(tmp_path / "ck", max_state_size=1000)
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    record = manager.store.get_record(checkpoint_id)
    assert record is not None
    payload = b"\x28\xb5\x2f\xfd" + b"\0" * 20  # a zstd magic, then garbage
    crafted = dataclasses.replace(
        record, raw_size=10**9, stored_size=len(payload), sha256=hashlib.sha256(payload).hexdigest()
    )
    replace_blob(tmp_path / "ck", checkpoint_id, blob_format.pack(crafted, payload, None))
    # compression.decompress refuses the size before calling the codec.
    with pytest.raises(CheckpointCorruptedError, match="above the 1000 allowed"):
        manager.load_checkpoint(checkpoint_id)


def test_a_blob_stored_under_another_id_is_refused(
    manager: StateCheckpointManager, tmp_path: Path, no_decoding: None
) -> None:
    first = manager.save_checkpoint({"n": 1}, "a", "w")
    second = manager.save_checkpoint({"n": 2}, "a", "w")
    replace_blob(tmp_path / "ck", second, stored_blob(tmp_path / "ck", first))
    with pytest.raises(CheckpointCorruptedError, match="another checkpoint"):
        manager.load_checkpoint(second)


def test_a_missing_checkpoint_is_not_found(manager: StateCheckpointManager) -> None:
    manager.save_checkpoint(STATE, "a", "w")
    with pytest.raises(CheckpointNotFoundError):
        manager.load_checkpoint("ck_0000000000abcd_000000000000")


# -- crash recovery: what a crash leaves in the WAL ------------------------------------


def _crash_copy(source: Path, target: Path, wal_bytes: int | None, flip: int | None) -> None:
    """Copy the database and its WAL as a crash would leave them: the WAL cut to
    ``wal_bytes`` (a torn tail) and/or one byte flipped at offset ``flip``."""
    target.mkdir()
    shutil.copyfile(source / DATABASE_NAME, target / DATABASE_NAME)
    wal = bytearray((source / f"{DATABASE_NAME}-wal").read_bytes())
    if wal_bytes is not None:
        del wal[wal_bytes:]
    if flip is not None:
        wal[flip] ^= 0x01
    (target / f"{DATABASE_NAME}-wal").write_bytes(bytes(wal))


@pytest.mark.parametrize("damage", ["torn_mid_frame", "torn_before_commit_frame", "bad_checksum"])
def test_a_torn_or_damaged_last_commit_loses_only_that_save(tmp_path: Path, damage: str) -> None:
    source = tmp_path / "ck"
    manager = make(source)
    kept = manager.save_checkpoint({"n": 1, "pad": "x" * 5000}, "a", "w")
    wal = source / f"{DATABASE_NAME}-wal"
    after_first = wal.stat().st_size
    manager.save_checkpoint({"n": 2, "pad": "y" * 5000}, "a", "w")
    after_second = wal.stat().st_size
    assert after_second > after_first  # both commits are still in the WAL
    page = manager.store._connection().execute("PRAGMA page_size").fetchone()[0]
    frame = 24 + page
    cut, flip = {
        "torn_mid_frame": (after_first + (after_second - after_first) // 2, None),
        "torn_before_commit_frame": (after_second - frame, None),
        "bad_checksum": (None, after_second - 100),
    }[damage]
    _crash_copy(source, tmp_path / "after-crash", cut, flip)
    recovered = make(tmp_path / "after-crash")
    assert [i["checkpoint_id"] for i in recovered.list_checkpoints()] == [kept]
    assert list(recovered.store.iter_blob_ids()) == [kept]
    assert recovered.load_checkpoint(kept)["n"] == 1
    assert recovered.rebuild_index().corrupted == ()
    # The recovered database takes new saves.
    assert recovered.load_checkpoint(recovered.save_checkpoint({"n": 3}, "a", "w")) == {"n": 3}


def test_an_intact_wal_keeps_every_committed_save(tmp_path: Path) -> None:
    source = tmp_path / "ck"
    manager = make(source)
    ids = [manager.save_checkpoint({"n": n}, "a", "w") for n in range(3)]
    _crash_copy(source, tmp_path / "after-crash", None, None)
    recovered = make(tmp_path / "after-crash")
    assert [i["checkpoint_id"] for i in recovered.list_checkpoints()] == ids[::-1]
    assert [recovered.load_checkpoint(i) for i in ids] == [{"n": n} for n in range(3)]


# -- threads ---------------------------------------------------------------------------


def test_concurrent_saves_and_loads_from_threads(tmp_path: Path) -> None:
    manager = make(tmp_path / "ck")
    barrier = threading.Barrier(8)

    def work(writer: int) -> list[str]:
        barrier.wait()
        ids = []
        for i in range(15):
            checkpoint_id = manager.save_checkpoint({"w": writer, "i": i}, f"w{writer}", "shared")
            assert manager.load_checkpoint(checkpoint_id) == {"w": writer, "i": i}
            ids.append(checkpoint_id)
        return ids

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    listed = manager.list_checkpoints(workflow_id="shared")
    assert len(listed) == 120
    assert {i["checkpoint_id"] for i in listed} == {c for ids in results for c in ids}
    for writer, ids in enumerate(results):
        mine = [i["checkpoint_id"] for i in manager.list_checkpoints(agent_id=f"w{writer}")]
        assert mine == ids[::-1]  # each thread's saves in its own order
    assert manager.rebuild_index().indexed == 120


# -- removal, retention, rebuild -------------------------------------------------------


def test_delete_removes_record_and_blob(manager: StateCheckpointManager) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    manager.delete_checkpoint(checkpoint_id)
    assert manager.list_checkpoints() == []
    assert list(manager.store.iter_blob_ids()) == []
    with pytest.raises(CheckpointNotFoundError):
        manager.load_checkpoint(checkpoint_id)
    with pytest.raises(CheckpointNotFoundError):
        manager.delete_checkpoint(checkpoint_id)


def test_cleanup_keeps_the_newest_per_group_and_deletes_blobs_in_one_call(
    manager: StateCheckpointManager, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = {group: [] for group in ("w1", "w2")}  # type: dict[str, list[str]]
    for n in range(5):
        for group in ids:
            ids[group].append(manager.save_checkpoint({"n": n}, "a", group))
            clock.advance(10)
    store = manager.store
    assert isinstance(store, SqliteCheckpointStore)

    def one_by_one(checkpoint_id: str) -> bool:
        raise AssertionError("one blob at a time")

    monkeypatch.setattr(store, "delete_blob", one_by_one)
    preview = manager.cleanup(keep_last=2, dry_run=True)
    assert preview.count == 6
    assert len(list(store.iter_blob_ids())) == 10
    result = manager.cleanup(keep_last=2)
    assert set(result.checkpoint_ids) == set(ids["w1"][:3] + ids["w2"][:3])
    left = {i["checkpoint_id"] for i in manager.list_checkpoints()}
    assert left == set(ids["w1"][3:] + ids["w2"][3:])
    assert set(store.iter_blob_ids()) == left
    assert store.delete_blobs([]) == 0


def test_rebuild_index_restores_records_and_reports_corrupted_blobs(
    manager: StateCheckpointManager, tmp_path: Path
) -> None:
    good = manager.save_checkpoint({"n": 1}, "a", "w")
    bad = manager.save_checkpoint({"n": 2}, "a", "w")
    data = bytearray(stored_blob(tmp_path / "ck", bad))
    data[-1] ^= 0x01
    replace_blob(tmp_path / "ck", bad, bytes(data))
    manager.store.remove_records([good])
    result = manager.rebuild_index()
    assert result.indexed == 1
    assert result.corrupted == (bad,)
    assert result.removed == (bad,)
    assert [i["checkpoint_id"] for i in manager.list_checkpoints()] == [good]
    assert bad in set(manager.store.iter_blob_ids())  # left in place for inspection


def test_schema_one_indexes_are_not_kept(tmp_path: Path) -> None:
    make(tmp_path).save_checkpoint(STATE, "a", "w")
    conn = db(tmp_path)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert "checkpoints_by_group" not in names
    assert "checkpoints_by_group_seq" in names
