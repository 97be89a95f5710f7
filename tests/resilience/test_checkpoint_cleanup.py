"""cleanup(): keep_last, older_than (fake clock), dry_run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from resilience.checkpoint import (
    CleanupResult,
    StateCheckpointManager,
)
from tests.clock import FakeClock
from tests.resilience.checkpoint_support import STATE, blob_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def manager(tmp_path: Path, clock: FakeClock) -> StateCheckpointManager:
    return StateCheckpointManager(tmp_path / "ck", clock=clock)


# -- cleanup -----------------------------------------------------------------------------


def fill(manager: StateCheckpointManager, clock: FakeClock, groups: list[tuple[str, str]],
         per_group: int) -> dict[tuple[str, str], list[str]]:  # fmt: skip
    saved: dict[tuple[str, str], list[str]] = {}
    for _ in range(per_group):
        for agent, workflow in groups:
            clock.advance(10)
            saved.setdefault((agent, workflow), []).append(
                manager.save_checkpoint(STATE, agent, workflow)
            )
    return saved


def remaining(manager: StateCheckpointManager) -> set[str]:
    return {info["checkpoint_id"] for info in manager.list_checkpoints()}


def test_cleanup_keep_last_keeps_the_newest_n_per_group(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    saved = fill(manager, clock, [("a", "w1"), ("a", "w2"), ("b", "w1")], 5)
    result = manager.cleanup(keep_last=2)
    kept = {cid for ids in saved.values() for cid in ids[-2:]}
    assert remaining(manager) == kept
    assert result.count == 9 == len(result.checkpoint_ids)
    assert set(result.checkpoint_ids) == {c for ids in saved.values() for c in ids[:-2]}
    assert result.checkpoint_ids == tuple(sorted(result.checkpoint_ids, reverse=True))
    assert all(not blob_path(manager, cid).exists() for cid in result.checkpoint_ids)
    assert result.stored_bytes > 0
    assert result.dry_run is False


def test_cleanup_older_than_uses_the_injected_clock(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    saved = fill(manager, clock, [("a", "w")], 6)["a", "w"]  # created 10 s apart
    result = manager.cleanup(older_than=dt.timedelta(seconds=30))  # now = newest
    assert set(result.checkpoint_ids) == set(saved[:2])  # 50 s and 40 s old
    assert remaining(manager) == set(saved[2:])  # exactly 30 s old is not "older"
    clock.advance(1000)
    assert manager.cleanup(older_than=2000).count == 0


def test_cleanup_never_removes_the_newest_keep_last_even_when_old(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    saved = fill(manager, clock, [("a", "w"), ("b", "w")], 4)
    clock.advance(10_000)
    result = manager.cleanup(keep_last=1, older_than=60)
    assert remaining(manager) == {saved["a", "w"][-1], saved["b", "w"][-1]}
    assert result.count == 6


def test_cleanup_dry_run_reports_without_removing(
    manager: StateCheckpointManager, clock: FakeClock
) -> None:
    fill(manager, clock, [("a", "w")], 4)
    before = remaining(manager)
    dry = manager.cleanup(keep_last=1, dry_run=True)
    assert dry.dry_run is True and dry.count == 3
    assert remaining(manager) == before
    real = manager.cleanup(keep_last=1)
    assert real.checkpoint_ids == dry.checkpoint_ids
    assert real.stored_bytes == dry.stored_bytes
    assert real.to_dict() == {**dry.to_dict(), "dry_run": False}


def test_cleanup_requires_a_criterion_and_validates_it(manager: StateCheckpointManager) -> None:
    with pytest.raises(ValueError, match="keep_last and/or older_than"):
        manager.cleanup()
    with pytest.raises(ValueError, match="keep_last"):
        manager.cleanup(keep_last=0)
    with pytest.raises(ValueError, match="older_than"):
        manager.cleanup(older_than=-1)
    with pytest.raises(TypeError, match="older_than"):
        manager.cleanup(older_than="1d")  # type: ignore[arg-type]


def test_cleanup_result_to_dict_is_json_ready() -> None:
    result = CleanupResult(checkpoint_ids=("x",), count=1, stored_bytes=5)
    assert orjson.loads(orjson.dumps(result.to_dict())) == {
        "checkpoint_ids": ["x"], "count": 1, "stored_bytes": 5, "dry_run": False,
    }  # fmt: skip
