"""The worker's checkpoint forwarder, without Django: queueing, drops, retries, the thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from resilience.checkpoint import StateCheckpointManager
from resilience.events import CheckpointSaved, EventBus
from resilience.fleet import TransportError, instance_info
from resilience.fleet.checkpoints import CHECKPOINTS_PATH, CheckpointForwarder, forward


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail
        self.sent = threading.Event()

    def send(self, body: bytes) -> dict[str, Any]:
        if self.fail:
            self.fail -= 1
            raise TransportError("down")
        self.bodies.append(json.loads(body))
        self.sent.set()
        return {}


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import resilience.checkpoint.manager as manager_module

    bus = EventBus()
    monkeypatch.setattr(manager_module, "bus", bus)
    made = StateCheckpointManager(tmp_path / "ck", signing_key="k")
    made.test_bus = bus  # type: ignore[attr-defined]
    yield made
    made.close()


def forwarder(manager: Any, transport: Any, **kwargs: Any) -> CheckpointForwarder:
    return CheckpointForwarder(
        manager,
        transport=transport,
        instance=instance_info(service="w"),
        event_bus=manager.test_bus,
        **kwargs,
    )


def test_a_save_is_sent_as_one_checkpoints_message(manager: Any) -> None:
    transport = Recorder()
    sender = forwarder(manager, transport)
    checkpoint_id = manager.save_checkpoint({"a": 1}, "agent", "wf", {"m": 1})
    assert sender.send_once()
    (body,) = transport.bodies
    assert (body["protocol"], body["type"], body["instance"]["service"]) == (1, "checkpoints", "w")
    (item,) = body["checkpoints"]
    info = manager.get_checkpoint_info(checkpoint_id)
    assert item == {
        "checkpoint_id": checkpoint_id,
        "agent_id": "agent",
        "workflow_id": "wf",
        "created_at": info["created_at"],
        "raw_size": info["raw_size"],
        "stored_size": info["stored_size"],
        "sha256": info["sha256"],
        "codec": info["codec"],
        "metadata": {"m": 1},
        "blob": f"{checkpoint_id}.ckpt",
    }
    assert (tmp_blob := manager.store.files.path(checkpoint_id)).name == item["blob"]
    assert tmp_blob.is_file()
    assert (sender.sent, sender.pending) == (1, 0)


def test_ids_are_kept_while_the_dashboard_is_down_and_drops_are_counted(manager: Any) -> None:
    transport = Recorder(fail=1)
    sender = forwarder(manager, transport, max_pending=2)
    for step in range(3):
        manager.save_checkpoint({"step": step}, "agent", "wf")
    assert (sender.pending, sender.dropped) == (2, 1)
    assert not sender.send_once()
    assert (sender.pending, sender.failed) == (2, 1)
    assert sender.send_once()
    assert len(transport.bodies[0]["checkpoints"]) == 2 and sender.pending == 0


def test_a_checkpoint_deleted_before_sending_is_skipped(manager: Any) -> None:
    transport = Recorder()
    sender = forwarder(manager, transport)
    gone = manager.save_checkpoint({"a": 1}, "agent", "wf")
    kept = manager.save_checkpoint({"a": 2}, "agent", "wf")
    manager.delete_checkpoint(gone)
    assert sender.send_once()
    assert [i["checkpoint_id"] for i in transport.bodies[0]["checkpoints"]] == [kept]


def test_other_events_are_ignored_and_the_listener_never_raises(manager: Any) -> None:
    sender = forwarder(manager, Recorder())
    sender._on_event(CheckpointSaved(name="ck", time=1.0, agent_id="a", workflow_id="w",
                                     raw_size=1, stored_size=1, codec="none"))  # fmt: skip
    from resilience.events import CallRejected

    sender._on_event(CallRejected(name="b", time=1.0, state="open", remaining=1.0))
    assert sender.pending == 1


def test_the_thread_sends_on_a_save_and_stop_flushes(manager: Any) -> None:
    transport = Recorder()
    sender = forwarder(manager, transport).start()
    manager.save_checkpoint({"a": 1}, "agent", "wf")
    assert transport.sent.wait(10)
    manager.save_checkpoint({"a": 2}, "agent", "wf")
    sender.stop(10)
    assert sum(len(b["checkpoints"]) for b in transport.bodies) == 2
    manager.save_checkpoint({"a": 3}, "agent", "wf")  # after stop: no longer listened to
    assert sender.pending == 0


def test_bad_arguments_are_value_errors(manager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        forwarder(manager, Recorder(), max_pending=0)
    with pytest.raises(ValueError, match="max_backoff"):
        forwarder(manager, Recorder(), max_backoff=0)
    monkeypatch.delenv("RESILIENCE_DASHBOARD_URL", raising=False)
    with pytest.raises(ValueError, match="dashboard url"):
        forward(manager)
    with pytest.raises(ValueError, match="http"):
        forward(manager, url="ftp://x")


def test_forward_posts_to_the_checkpoints_path(manager: Any) -> None:
    sender = forward(manager, url="http://127.0.0.1:9/", token="t", instance=instance_info())
    try:
        assert sender.transport.url == "http://127.0.0.1:9" + CHECKPOINTS_PATH  # type: ignore[attr-defined]
    finally:
        sender.stop(5)
