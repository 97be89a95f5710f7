from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from dashboard.checkpoints import retention, store
from dashboard.checkpoints.admin_filters import RECENT_WORKFLOWS
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore
from dashboard.models import AuditEntry
from dashboard.workflows import engine as workflow_engine
from resilience.checkpoint import StateCheckpointManager, set_default_checkpoint_manager

pytestmark = pytest.mark.django_db

HOUR = 3600.0
CHANGELIST = "admin:checkpoints_checkpoint_changelist"


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch: pytest.MonkeyPatch) -> retention.RetentionWorker:
    worker = retention.RetentionWorker()
    monkeypatch.setattr(retention, "worker", worker)
    return worker


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[[], Any]:
    return lambda: django_capture_on_commit_callbacks(execute=True)


def save(age: float, agent: str = "a", workflow: str = "w", status: str = "succeeded") -> str:
    when = time.time() - age
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=lambda: when
    )
    return manager.save_checkpoint({"at": when}, agent, workflow, {"status": status})


def remaining() -> set[str]:
    return set(Checkpoint.objects.values_list("pk", flat=True))


def rules(keep_last: int | None = None, max_age: float | None = None) -> retention.Policy:
    age = None if max_age is None else timedelta(seconds=max_age)
    return retention.Policy(keep_last=keep_last, max_age=age, interval=60.0)


def test_keep_last_keeps_the_newest_n_of_every_agent_and_workflow(commit: Any) -> None:
    first = [save(age, "a", "w1") for age in (50, 40, 30, 20)]
    other = [save(age, "b", "w1") for age in (45, 35)]
    with commit():
        status = retention.enforce(rules(keep_last=2))
    assert remaining() == {*first[2:], *other}
    assert status.deleted == 2


def test_max_age_removes_old_checkpoints_even_the_newest_of_a_finished_workflow(
    commit: Any,
) -> None:
    old = [save(3 * HOUR, workflow="done"), save(2 * HOUR, workflow="done")]
    fresh = save(60, workflow="new")
    with commit():
        retention.enforce(rules(max_age=HOUR))
    assert remaining() == {fresh}
    assert not set(old) & remaining()


def test_the_newest_checkpoint_of_a_running_workflow_is_never_deleted(commit: Any) -> None:
    older = save(3 * HOUR, workflow="crashed", status="running")
    newest = save(2 * HOUR, workflow="crashed", status="running")
    with commit():
        status = retention.enforce(rules(keep_last=1, max_age=HOUR))
    assert remaining() == {newest}
    assert older not in remaining()
    assert status.protected == 1


def test_a_workflow_the_engine_runs_keeps_its_newest_checkpoint(
    commit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    newest = save(2 * HOUR, workflow="busy", status="succeeded")
    monkeypatch.setattr(workflow_engine, "running_workflow_ids", lambda: {"busy"})
    with commit():
        retention.enforce(rules(max_age=HOUR))
    assert remaining() == {newest}


def test_retention_is_audited_and_recorded(commit: Any, fresh_worker: Any) -> None:
    save(2 * HOUR)
    with commit():
        retention.enforce(rules(max_age=HOUR), source="command")
    entry = AuditEntry.objects.get(action="checkpoint.delete")
    assert entry.reason.startswith("retention: delete after")
    assert fresh_worker.status.deleted == 1
    assert fresh_worker.deleted_total == 1


def test_policy_reads_settings(settings: Any) -> None:
    settings.CHECKPOINT_KEEP_LAST, settings.CHECKPOINT_MAX_AGE = 5, "2h"
    settings.CHECKPOINT_CLEANUP_INTERVAL = 30
    assert retention.policy() == retention.Policy(
        keep_last=5, max_age=timedelta(hours=2), interval=30.0
    )
    settings.CHECKPOINT_KEEP_LAST, settings.CHECKPOINT_MAX_AGE = 0, ""
    assert not retention.policy().active
    settings.CHECKPOINT_MAX_AGE = "soon"
    with pytest.raises(ValueError, match="not a duration"):
        retention.policy()


def test_the_command_without_rules_applies_the_configured_policy(
    settings: Any, commit: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.CHECKPOINT_KEEP_LAST, settings.CHECKPOINT_MAX_AGE = 1, ""
    ids = [save(age) for age in (30, 20, 10)]
    call_command("checkpoints", "cleanup", "--dry-run")
    assert "Would remove 2 checkpoints" in capsys.readouterr().out
    assert remaining() == set(ids)
    with commit():
        call_command("checkpoints", "cleanup")
    assert "Removed 2 checkpoints" in capsys.readouterr().out
    assert remaining() == {ids[2]}


def test_a_failed_run_is_recorded_counted_and_raised_for_the_thread_to_log(
    fresh_worker: Any,
) -> None:
    calls: list[int] = []

    def boom() -> retention.Status:
        calls.append(1)
        raise RuntimeError("database away")

    worker = retention.RetentionWorker(boom)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            worker.run_once()
    assert worker.errors == 2 and len(calls) == 2
    assert worker.status is not None and "database away" in worker.status.error


def test_the_worker_thread_runs_enforce_until_stopped_and_survives_errors() -> None:
    done = threading.Event()
    calls: list[int] = []

    def flaky() -> retention.Status:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        done.set()
        return retention.Status(finished_at=0.0, deleted=0, protected=0)

    worker = retention.RetentionWorker(flaky)
    assert not worker.running
    assert worker.start(0.001)
    try:
        assert not worker.start(0.001)  # already running
        assert done.wait(10)  # waiting for the thread, not for time to pass in the logic
    finally:
        worker.stop()
    assert not worker.running
    assert worker.errors == 1 and len(calls) >= 2


def test_the_admin_shows_the_policy_and_the_last_run(
    admin_client: Client, settings: Any, commit: Any
) -> None:
    settings.CHECKPOINT_KEEP_LAST, settings.CHECKPOINT_MAX_AGE = 3, "1h"
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "keep the newest 3 per agent and workflow; delete after 1h" in body
    assert "Not run in this process yet" in body
    save(2 * HOUR)
    with commit():
        retention.enforce()
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "1 deleted, 0 kept for running workflows" in body


def test_the_admin_workflow_filter_lists_only_recent_workflows(admin_client: Client) -> None:
    for index in range(RECENT_WORKFLOWS + 5):
        save(1000 - index, workflow=f"wf-{index:03d}")
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    newest = f"wf-{RECENT_WORKFLOWS + 4:03d}"
    assert f"?workflow_id={newest}" in body
    assert "?workflow_id=wf-000" not in body
    chosen = admin_client.get(reverse(CHANGELIST), {"workflow_id": "wf-000"}).content.decode()
    assert "?workflow_id=wf-000" in chosen
