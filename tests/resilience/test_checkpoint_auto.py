from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from resilience.checkpoint import AutoCheckpointer, StateCheckpointManager
from tests.clock import FakeClock


@pytest.fixture
def manager(tmp_path: Path) -> StateCheckpointManager:
    return StateCheckpointManager(tmp_path)


def saved_on_calls(auto: AutoCheckpointer, calls: int) -> list[int]:
    return [call for call in range(1, calls + 1) if auto.maybe_checkpoint({"call": call})]


def test_saves_on_every_nth_call(manager: StateCheckpointManager) -> None:
    auto = AutoCheckpointer(manager, "agent_1", "wf_1", checkpoint_interval=3)
    assert saved_on_calls(auto, 10) == [3, 6, 9]
    assert auto.calls == 10 and auto.saves == 3
    latest = manager.get_latest_checkpoint("agent_1", "wf_1")
    assert latest is not None
    assert latest == auto.last_checkpoint_id
    assert manager.load_checkpoint(latest) == {"call": 9}


def test_default_interval_is_one_hundred(manager: StateCheckpointManager) -> None:
    auto = AutoCheckpointer(manager, "a", "w")
    assert saved_on_calls(auto, 250) == [100, 200]


def test_maybe_checkpoint_returns_the_id_or_none(manager: StateCheckpointManager) -> None:
    auto = AutoCheckpointer(manager, "a", "w", checkpoint_interval=2)
    assert auto.maybe_checkpoint({"n": 1}) is None
    checkpoint_id = auto.maybe_checkpoint({"n": 2})
    assert checkpoint_id is not None
    assert manager.load_checkpoint(checkpoint_id) == {"n": 2}


def test_time_interval_saves_early_and_restarts_the_count(
    manager: StateCheckpointManager,
) -> None:
    clock = FakeClock(100.0)
    auto = AutoCheckpointer(manager, "a", "w", 5, time_interval=60, clock=clock)
    assert auto.maybe_checkpoint({}) is None  # call 1
    assert auto.maybe_checkpoint({}) is None  # call 2
    clock.now += 60
    assert auto.maybe_checkpoint({}) is not None  # call 3: by time
    # The count restarted: the next count-based save is 5 calls later, not at call 5.
    results = [auto.maybe_checkpoint({}) for _ in range(5)]
    assert [r is not None for r in results] == [False, False, False, False, True]
    clock.now += 59.9
    assert auto.maybe_checkpoint({}) is None  # the count-based save restarted the timer
    clock.now += 0.1
    assert auto.maybe_checkpoint({}) is not None
    assert auto.saves == 3


def test_time_interval_accepts_a_timedelta(manager: StateCheckpointManager) -> None:
    clock = FakeClock(100.0)
    auto = AutoCheckpointer(
        manager, "a", "w", 1000, time_interval=dt.timedelta(minutes=1), clock=clock
    )
    assert auto.time_interval == 60.0
    clock.now += 61
    assert auto.maybe_checkpoint({}) is not None


def test_force_checkpoint_saves_now_and_restarts_the_count(
    manager: StateCheckpointManager,
) -> None:
    auto = AutoCheckpointer(manager, "a", "w", checkpoint_interval=3)
    assert saved_on_calls(auto, 2) == []
    forced = auto.force_checkpoint({"forced": True})
    assert manager.load_checkpoint(forced) == {"forced": True}
    assert manager.get_latest_checkpoint() == forced
    assert [auto.maybe_checkpoint({}) is not None for _ in range(3)] == [False, False, True]


def test_a_failed_save_propagates_and_is_retried_on_the_next_call(
    manager: StateCheckpointManager,
) -> None:
    auto = AutoCheckpointer(manager, "a", "w", checkpoint_interval=2)
    auto.maybe_checkpoint({})
    with pytest.raises(TypeError, match="state"):
        auto.maybe_checkpoint({"fn": print})
    assert auto.saves == 0
    assert auto.maybe_checkpoint({"ok": 1}) is not None
    assert auto.maybe_checkpoint({}) is None  # back on the normal schedule


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"checkpoint_interval": 0}, ValueError, "checkpoint_interval"),
        ({"checkpoint_interval": 1.5}, TypeError, "checkpoint_interval"),
        ({"time_interval": 0}, ValueError, "time_interval"),
        ({"time_interval": -1}, ValueError, "time_interval"),
        ({"agent_id": "a/b"}, ValueError, "agent_id"),
        ({"workflow_id": ""}, ValueError, "workflow_id"),
    ],
)
def test_invalid_arguments_are_rejected(
    manager: StateCheckpointManager, kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    args: dict[str, Any] = {"agent_id": "a", "workflow_id": "w", **kwargs}
    with pytest.raises(error, match=field):
        AutoCheckpointer(manager, **args)


async def test_async_variants_follow_the_same_schedule(manager: StateCheckpointManager) -> None:
    auto = AutoCheckpointer(manager, "a", "w", checkpoint_interval=2)
    assert await auto.amaybe_checkpoint({"n": 1}) is None
    checkpoint_id = await auto.amaybe_checkpoint({"n": 2})
    assert checkpoint_id is not None
    assert await manager.aload_checkpoint(checkpoint_id) == {"n": 2}
    forced = await auto.aforce_checkpoint({"n": 3})
    assert manager.get_latest_checkpoint() == forced
    assert auto.saves == 2
