from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from resilience.checkpoint import (
    CHECKPOINT_ID_PATTERN,
    RECORD_FIELDS,
    CheckpointRecord,
    CheckpointStore,
    CompositeCheckpointStore,
    FileBlobStore,
    LocalCheckpointStore,
    SqliteMetadataIndex,
    StateCheckpointManager,
)
from resilience.errors import (
    CheckpointNotFoundError,
    ConfigTypeError,
    ConfigValueError,
)
from resilience.events import CheckpointSaved, Event, bus
from tests.clock import FakeClock
from tests.resilience.checkpoint_support import STATE, blob_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> StateCheckpointManager:
    return StateCheckpointManager(tmp_path / "ck", clock=clock)


# -- round trips and configuration ---------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "codec"),
    [(True, "zstd"), ("zstd", "zstd"), ("gzip", "gzip"), (False, "none"), ("none", "none")],
)
def test_save_and_load_round_trip_with_each_codec(
    tmp_path: Path, compression: bool | str, codec: str
) -> None:
    manager = StateCheckpointManager(tmp_path, compression=compression)
    checkpoint_id = manager.save_checkpoint(STATE, "agent_1", "wf_1")
    assert manager.load_checkpoint(checkpoint_id) == STATE
    info = manager.get_checkpoint_info(checkpoint_id)
    assert info["codec"] == codec
    assert info["raw_size"] == len(orjson.dumps(STATE))
    if codec == "none":
        assert info["stored_size"] == info["raw_size"]
    else:
        assert info["stored_size"] < info["raw_size"]
        assert info["ratio"] > 1


def test_older_checkpoints_stay_readable_after_the_default_codec_changes(tmp_path: Path) -> None:
    ids = {
        codec: StateCheckpointManager(tmp_path, compression=codec).save_checkpoint(STATE, "a", "w")
        for codec in ("zstd", "gzip", "none")
    }
    reader = StateCheckpointManager(tmp_path, compression="gzip")
    for codec, checkpoint_id in ids.items():
        assert reader.load_checkpoint(checkpoint_id) == STATE
        assert reader.get_checkpoint_info(checkpoint_id)["codec"] == codec


@pytest.mark.parametrize("bad", ["lz4", "ZSTD", "", 1, 0, None, 3.0])
def test_invalid_compression_raises_value_error_naming_compression(
    tmp_path: Path, bad: object
) -> None:
    with pytest.raises(ValueError, match="compression"):
        StateCheckpointManager(tmp_path, compression=bad)  # type: ignore[arg-type]


def test_signing_key_must_be_non_empty_bytes_or_str(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="signing_key"):
        StateCheckpointManager(tmp_path, signing_key=b"")
    with pytest.raises(ConfigTypeError, match="signing_key"):
        StateCheckpointManager(tmp_path, signing_key=123)  # type: ignore[arg-type]


def test_store_must_implement_the_store_protocol(tmp_path: Path) -> None:
    with pytest.raises(ConfigTypeError, match="CheckpointStore"):
        StateCheckpointManager(store=object())  # type: ignore[arg-type]


def test_constructing_a_manager_creates_nothing_on_disk(tmp_path: Path) -> None:
    StateCheckpointManager(tmp_path / "lazy")
    assert not (tmp_path / "lazy").exists()


def test_info_dict_has_the_documented_fields(manager: StateCheckpointManager) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "agent_1", "wf_1", metadata={"step": 7})
    info = manager.get_checkpoint_info(checkpoint_id)
    assert set(info) == {
        "checkpoint_id", "agent_id", "workflow_id", "created_at", "raw_size",
        "stored_size", "ratio", "sha256", "codec", "metadata",
    }  # fmt: skip
    assert info["checkpoint_id"] == checkpoint_id
    assert (info["agent_id"], info["workflow_id"]) == ("agent_1", "wf_1")
    assert info["created_at"] == 1_700_000_000.0
    assert info["metadata"] == {"step": 7}
    assert manager.list_checkpoints() == [info]
    assert info["ratio"] == round(info["raw_size"] / info["stored_size"], 3)
    stored = blob_path(manager, checkpoint_id).read_bytes()
    assert info["sha256"] == hashlib.sha256(stored[-info["stored_size"] :]).hexdigest()


def test_metadata_is_converted_like_state_and_errors_name_metadata(
    manager: StateCheckpointManager,
) -> None:
    checkpoint_id = manager.save_checkpoint(
        STATE, "a", "w", metadata={"when": dt.date(2024, 1, 2), "tags": ("x",)}
    )
    assert manager.get_checkpoint_info(checkpoint_id)["metadata"] == {
        "when": "2024-01-02",
        "tags": ["x"],
    }
    with pytest.raises(TypeError, match=r'^metadata\["fn"\]'):
        manager.save_checkpoint(STATE, "a", "w", metadata={"fn": print})
    with pytest.raises(ConfigTypeError, match="metadata"):
        manager.save_checkpoint(STATE, "a", "w", metadata=["not", "a", "dict"])  # type: ignore[arg-type]


def test_unserializable_state_raises_type_error_and_stores_nothing(
    manager: StateCheckpointManager,
) -> None:
    with pytest.raises(TypeError, match=r'^state\["tools"\]\[3\]\["fn"\]'):
        manager.save_checkpoint({"tools": [{}, {}, {}, {"fn": lambda: 1}]}, "a", "w")
    assert manager.list_checkpoints() == []


def test_ids_are_well_formed_and_strictly_increasing_in_save_order(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    ids = [manager.save_checkpoint({"i": i}, "a", "w") for i in range(20)]  # frozen clock
    assert all(CHECKPOINT_ID_PATTERN.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 20
    clock.advance(-3600)  # a wall clock stepped back (NTP) must not reorder ids
    assert manager.save_checkpoint({}, "a", "w") > ids[-1]


def test_blob_file_name_contains_the_checkpoint_id(manager: StateCheckpointManager) -> None:
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    path = blob_path(manager, checkpoint_id)
    assert path.exists()
    assert checkpoint_id in path.name
    assert path.stat().st_mode & 0o077 == 0


def test_save_publishes_checkpoint_saved_when_someone_listens(
    manager: StateCheckpointManager,
) -> None:
    events: list[Event] = []
    unsubscribe = bus.subscribe(events.append)
    try:
        checkpoint_id = manager.save_checkpoint(STATE, "agent_1", "wf_1", metadata={"k": 1})
    finally:
        unsubscribe()
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, CheckpointSaved)
    info = manager.get_checkpoint_info(checkpoint_id)
    assert event.name == checkpoint_id
    assert (event.agent_id, event.workflow_id, event.codec) == ("agent_1", "wf_1", "zstd")
    assert (event.raw_size, event.stored_size) == (info["raw_size"], info["stored_size"])
    assert event.time == 1_700_000_000.0
    assert event.metadata == {"k": 1}


# -- ids and lookups -----------------------------------------------------------------

BAD_IDS = [
    "",
    "../x",
    "a/b",
    "ck_/../../etc/passwd",
    "ck_066151e3fcf1dd_f316a4bb4646/../x",
    "ck_066151e3fcf1dd_f316a4bb464",  # too short
    "ck_066151e3fcf1dd_f316a4bb46466",  # too long
    "ck_066151E3FCF1DD_F316A4BB4646",  # upper case
    "ck_066151e3fcf1dd_f316a4bb4646\n",
    "x" * 10_000,
]


class ExplodingStore(CompositeCheckpointStore):
    """Fails the test if the manager touches storage."""

    def __getattribute__(self, name: str) -> Any:
        if name.endswith(("_blob", "_record", "_records", "_blob_ids")):
            raise AssertionError(f"store.{name} was called")
        return super().__getattribute__(name)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_malformed_ids_raise_value_error_without_touching_storage(tmp_path: Path, bad: str) -> None:
    inner = LocalCheckpointStore(tmp_path)
    manager = StateCheckpointManager(store=ExplodingStore(inner.blobs, inner.index))
    for call in (
        manager.load_checkpoint,
        manager.get_checkpoint_info,
        manager.delete_checkpoint,
        manager.verify_checkpoint,
    ):
        with pytest.raises(ValueError, match="checkpoint_id"):
            call(bad)
    assert list(tmp_path.iterdir()) == []


def test_a_non_string_id_raises_type_error(manager: StateCheckpointManager) -> None:
    with pytest.raises(TypeError, match="checkpoint_id"):
        manager.load_checkpoint(123)  # type: ignore[arg-type]


def test_file_blob_store_refuses_malformed_ids_itself(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_id"):
        FileBlobStore(tmp_path).write_blob("../escape", b"x")
    assert not (tmp_path.parent / "escape.ckpt").exists()


UNKNOWN = "ck_00000000000001_000000000000"


def test_unknown_ids_raise_not_found(manager: StateCheckpointManager) -> None:
    manager.save_checkpoint(STATE, "a", "w")
    with pytest.raises(CheckpointNotFoundError):
        manager.load_checkpoint(UNKNOWN)
    with pytest.raises(CheckpointNotFoundError):
        manager.get_checkpoint_info(UNKNOWN)
    with pytest.raises(CheckpointNotFoundError):
        manager.delete_checkpoint(UNKNOWN)
    with pytest.raises(CheckpointNotFoundError):
        manager.verify_checkpoint(UNKNOWN)


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "a b", "é", "x" * 129, "a\n"])
def test_invalid_agent_and_workflow_ids_are_rejected(
    manager: StateCheckpointManager, bad: str
) -> None:
    with pytest.raises(ValueError, match="agent_id"):
        manager.save_checkpoint(STATE, bad, "w")
    with pytest.raises(ValueError, match="workflow_id"):
        manager.save_checkpoint(STATE, "a", bad)
    with pytest.raises(ValueError, match="agent_id"):
        manager.list_checkpoints(agent_id=bad)
    assert manager.list_checkpoints() == []


def test_agent_ids_accept_the_documented_characters(manager: StateCheckpointManager) -> None:
    name = "Agent-1_a.b:c@d" + "x" * 113
    assert len(name) == 128
    checkpoint_id = manager.save_checkpoint(STATE, name, "550e8400-e29b-41d4-a716-446655440000")
    assert manager.get_checkpoint_info(checkpoint_id)["agent_id"] == name


def test_non_string_agent_id_raises_type_error(manager: StateCheckpointManager) -> None:
    with pytest.raises(TypeError, match="agent_id"):
        manager.save_checkpoint(STATE, 5, "w")  # type: ignore[arg-type]


def test_latest_and_list_filter_and_order_newest_first(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    assert manager.get_latest_checkpoint() is None
    saved: dict[tuple[str, str], list[str]] = {}
    for i in range(3):
        for agent in ("a1", "a2"):
            for workflow in ("w1", "w2"):
                clock.advance(1)
                checkpoint_id = manager.save_checkpoint({"i": i}, agent, workflow)
                saved.setdefault((agent, workflow), []).append(checkpoint_id)
    every = [cid for ids in saved.values() for cid in ids]
    listed = [info["checkpoint_id"] for info in manager.list_checkpoints()]
    assert listed == sorted(every, reverse=True)
    assert manager.get_latest_checkpoint() == max(every)
    assert manager.get_latest_checkpoint("a1", "w2") == saved["a1", "w2"][-1]
    only_a2 = [info["checkpoint_id"] for info in manager.list_checkpoints(agent_id="a2")]
    assert only_a2 == sorted(saved["a2", "w1"] + saved["a2", "w2"], reverse=True)
    only_w1 = manager.list_checkpoints(workflow_id="w1", limit=2)
    assert [info["checkpoint_id"] for info in only_w1] == sorted(
        saved["a1", "w1"] + saved["a2", "w1"], reverse=True
    )[:2]
    assert manager.get_latest_checkpoint(agent_id="nobody") is None
    with pytest.raises(ValueError, match="limit"):
        manager.list_checkpoints(limit=0)


def test_delete_removes_the_record_and_the_blob(manager: StateCheckpointManager) -> None:
    keep = manager.save_checkpoint({"n": 1}, "a", "w")
    gone = manager.save_checkpoint({"n": 2}, "a", "w")
    manager.delete_checkpoint(gone)
    assert not blob_path(manager, gone).exists()
    assert [i["checkpoint_id"] for i in manager.list_checkpoints()] == [keep]
    assert manager.get_latest_checkpoint() == keep
    with pytest.raises(CheckpointNotFoundError):
        manager.load_checkpoint(gone)


# -- async twins -----------------------------------------------------------------------


async def test_async_save_and_load_round_trip(manager: StateCheckpointManager) -> None:
    checkpoint_id = await manager.asave_checkpoint(STATE, "a", "w", {"m": 1})
    assert await manager.aload_checkpoint(checkpoint_id) == STATE
    with pytest.raises(CheckpointNotFoundError):
        await manager.aload_checkpoint(UNKNOWN)


# -- pluggable store -------------------------------------------------------------------


class MemoryStore:
    """A minimal third-party store, implemented only against the public protocol."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.records: dict[str, CheckpointRecord] = {}

    def write_blob(self, checkpoint_id: str, data: bytes) -> None:
        self.blobs[checkpoint_id] = data

    def read_blob(self, checkpoint_id: str) -> bytes:
        try:
            return self.blobs[checkpoint_id]
        except KeyError:
            raise CheckpointNotFoundError(checkpoint_id) from None

    def delete_blob(self, checkpoint_id: str) -> bool:
        return self.blobs.pop(checkpoint_id, None) is not None

    def iter_blob_ids(self) -> list[str]:
        return list(self.blobs)

    def add_record(self, record: CheckpointRecord) -> None:
        self.records[record.checkpoint_id] = record

    def get_record(self, checkpoint_id: str) -> CheckpointRecord | None:
        return self.records.get(checkpoint_id)

    def query_records(
        self, *, agent_id: str | None = None, workflow_id: str | None = None,
        limit: int | None = None,
    ) -> list[CheckpointRecord]:  # fmt: skip
        found = [
            r for r in self.records.values()
            if agent_id in (None, r.agent_id) and workflow_id in (None, r.workflow_id)
        ]  # fmt: skip
        found.reverse()  # newest (last added) first; a replaced record keeps its place
        return found[:limit]

    def remove_records(self, checkpoint_ids: Any) -> None:
        for checkpoint_id in checkpoint_ids:
            self.records.pop(checkpoint_id, None)


def test_a_custom_store_plugs_in_through_the_protocol(clock: FakeClock) -> None:
    store = MemoryStore()
    assert isinstance(store, CheckpointStore)
    manager = StateCheckpointManager(store=store, clock=clock)
    first = manager.save_checkpoint({"n": 1}, "a", "w")
    clock.advance(100)
    second = manager.save_checkpoint({"n": 2}, "a", "w")
    assert manager.load_checkpoint(first) == {"n": 1}
    assert manager.get_latest_checkpoint() == second
    assert manager.cleanup(keep_last=1).checkpoint_ids == (first,)
    store.records.clear()
    assert manager.rebuild_index().indexed == 1
    assert manager.list_checkpoints()[0]["checkpoint_id"] == second


def test_composite_store_combines_separate_blob_store_and_index(tmp_path: Path) -> None:
    store = CompositeCheckpointStore(
        FileBlobStore(tmp_path / "blobs"), SqliteMetadataIndex(tmp_path / "meta" / "i.db")
    )
    manager = StateCheckpointManager(store=store)
    checkpoint_id = manager.save_checkpoint(STATE, "a", "w")
    assert (tmp_path / "blobs" / f"{checkpoint_id}.ckpt").exists()
    assert (tmp_path / "meta" / "i.db").exists()
    assert manager.load_checkpoint(checkpoint_id) == STATE
    store.close()


def test_concurrent_saves_from_threads_are_all_indexed(manager: StateCheckpointManager) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def save(i: int) -> str:
        return manager.save_checkpoint({"i": i}, f"agent-{i % 4}", "w")

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(save, range(40)))
    assert len(set(ids)) == 40
    assert {info["checkpoint_id"] for info in manager.list_checkpoints()} == set(ids)
    assert all(manager.load_checkpoint(cid) == {"i": i} for i, cid in enumerate(ids))
    manager.close()
    # Reopens after close. The latest is the last one indexed (the store's order).
    assert manager.get_latest_checkpoint() == manager.list_checkpoints()[0]["checkpoint_id"]


def test_composite_store_and_manager_reject_wrong_parts(tmp_path: Path) -> None:
    with pytest.raises(ConfigTypeError, match="blobs"):
        CompositeCheckpointStore(object(), SqliteMetadataIndex(tmp_path / "i.db"))  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="index"):
        CompositeCheckpointStore(FileBlobStore(tmp_path), object())  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="clock"):
        StateCheckpointManager(tmp_path, clock=5.0)  # type: ignore[arg-type]


def test_record_fields_name_every_checkpoint_record_field() -> None:
    record = CheckpointRecord(
        checkpoint_id=UNKNOWN, agent_id="a", workflow_id="w", created_at=1.0, raw_size=10,
        stored_size=4, sha256="0" * 64, codec="zstd", metadata={"k": 1},
    )  # fmt: skip
    as_dict = record.to_dict()
    assert as_dict.pop("ratio") == 2.5
    assert tuple(as_dict) == RECORD_FIELDS
    assert CheckpointRecord(**as_dict) == record
