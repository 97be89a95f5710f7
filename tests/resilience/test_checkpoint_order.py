"""The newest checkpoint is the last one saved, whatever the writers' clocks say."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from resilience.checkpoint import StateCheckpointManager, _ids
from resilience.checkpoint.sqlite_index import _COLUMNS, _SCHEMA, SqliteMetadataIndex
from resilience.checkpoint.store import CheckpointRecord
from tests.clock import FakeClock


@pytest.fixture
def other_process(monkeypatch: pytest.MonkeyPatch):
    """Make the next id come from a process whose ids started afresh (another host)."""

    def switch() -> None:
        monkeypatch.setattr(_ids, "_last_tick", 0)

    return switch


def test_a_save_after_the_clock_stepped_back_is_the_latest(tmp_path: Path, other_process):
    clock = FakeClock(1_700_000_000.0)
    manager = StateCheckpointManager(tmp_path, clock=clock)
    older = manager.save_checkpoint({"v": 1}, "a", "w")
    clock.advance(-3600)  # NTP step back, VM restore, or a host whose clock lags
    other_process()
    newer = manager.save_checkpoint({"v": 2}, "a", "w")
    assert newer < older  # the id follows the clock...
    assert manager.get_latest_checkpoint("a", "w") == newer  # ...the order does not
    assert [info["checkpoint_id"] for info in manager.list_checkpoints()] == [newer, older]
    result = manager.cleanup(keep_last=1)
    assert result.checkpoint_ids == (older,)
    assert manager.load_checkpoint(manager.get_latest_checkpoint("a", "w") or "") == {"v": 2}


def test_cleanup_by_age_alone_keeps_the_latest_of_each_group(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    manager = StateCheckpointManager(tmp_path, clock=clock)
    ids = [manager.save_checkpoint({"v": i}, "a", "w") for i in range(3)]
    clock.advance(10_000)
    result = manager.cleanup(older_than=60)
    assert set(result.checkpoint_ids) == set(ids[:2])
    assert manager.get_latest_checkpoint("a", "w") == ids[2]


def test_re_adding_a_record_keeps_its_place(tmp_path: Path) -> None:
    manager = StateCheckpointManager(tmp_path)
    first = manager.save_checkpoint({"v": 1}, "a", "w")
    second = manager.save_checkpoint({"v": 2}, "a", "w")
    manager.rebuild_index()  # re-adds every record
    assert manager.get_latest_checkpoint("a", "w") == second
    assert manager.get_checkpoint_info(first)["checkpoint_id"] == first


def record(checkpoint_id: str) -> CheckpointRecord:
    return CheckpointRecord(
        checkpoint_id=checkpoint_id,
        agent_id="a",
        workflow_id="w",
        created_at=1.0,
        raw_size=2,
        stored_size=2,
        sha256="0" * 64,
        codec="none",
    )


def test_an_index_of_schema_1_is_upgraded_in_id_order(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path)
    for statement in _SCHEMA:
        conn.execute(statement)
    ids = [f"ck_{tick:014x}_{'0' * 12}" for tick in (3, 1, 2)]
    for checkpoint_id in ids:
        conn.execute(
            f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (checkpoint_id, "a", "w", 1.0, 2, 2, "0" * 64, "none", "{}"),
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    index = SqliteMetadataIndex(path)
    assert [r.checkpoint_id for r in index.query_records()] == sorted(ids, reverse=True)
    index.add_record(record(f"ck_{0:014x}_{'1' * 12}"))  # saved last, smallest id
    assert index.query_records(limit=1)[0].checkpoint_id == f"ck_{0:014x}_{'1' * 12}"
    index.close()
