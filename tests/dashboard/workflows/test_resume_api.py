"""POST /api/workflows/{id}/execute with from_checkpoint; lineage in GET /api/workflows/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.api import throttle
from dashboard.api.testing import bearer, make_user, token_for
from dashboard.checkpoints import store
from dashboard.checkpoints.forks import fork_checkpoint
from dashboard.checkpoints.models import Checkpoint
from dashboard.models import AuditEntry
from dashboard.workflows import engine as engine_module
from dashboard.workflows import simulated
from dashboard.workflows.engine import NotResumable, WorkflowEngine, default_breaker_config
from dashboard.workflows.models import WorkflowRun
from dashboard.workflows.progress import RunRecorder
from dashboard.workflows.simulated import Pattern, ServiceWorld
from resilience.checkpoint import set_default_checkpoint_manager
from resilience.circuit_breaker import CircuitBreaker
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

VIEW = "dashboard.view_dashboard"
EXECUTE = "workflows.execute_workflow"
RESUME = "checkpoints.resume_checkpoint"


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.API_RATE_LIMIT = "1000/60"
    settings.WORKFLOW_EXECUTE_RATE = "100/60"
    throttle.reset()
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


@pytest.fixture
def engine(clock: FakeClock) -> Iterator[WorkflowEngine]:
    patterns = {name: Pattern(latency_ms=5.0) for name in simulated.SERVICE_NAMES}
    world = ServiceWorld(patterns, clock=clock, sleep=clock.advance, seed=2)
    for name in patterns:
        CircuitBreaker(name, default_breaker_config(), clock=clock)
    created = WorkflowEngine(world, progress=RunRecorder(), checkpoint_interval=3, clock=clock)
    previous = engine_module.install(created)
    yield created
    engine_module.install(previous)


@pytest.fixture
def resumer() -> User:
    return make_user("resumer", VIEW, EXECUTE, RESUME)


def checkpoints(workflow_id: str) -> list[Checkpoint]:
    return list(Checkpoint.objects.filter(workflow_id=workflow_id).order_by("checkpoint_id"))


def execute(client: Client, token: str, workflow_id: str, **body: Any) -> Any:
    return client.post(
        f"/api/workflows/{workflow_id}/execute",
        body or None,
        content_type="application/json",
        **bearer(token),
    )


def test_execute_from_a_checkpoint_re_runs_from_its_step_and_is_audited(
    client: Client, engine: WorkflowEngine, resumer: User
) -> None:
    engine.execute("wf-1")
    chosen = checkpoints("wf-1")[1]  # after step 6
    token = token_for(resumer)
    response = execute(client, token, "wf-1", from_checkpoint=chosen.checkpoint_id, reason="why")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["start_step"], body["resumed_from"], body["status"]) == (
        6,
        chosen.checkpoint_id,
        "succeeded",
    )
    entry = AuditEntry.objects.get(action="workflow.resume")
    assert (entry.actor, entry.source, entry.reason, entry.details["run_id"]) == (
        "resumer",
        "api",
        "why",
        body["run_id"],
    )


def test_without_from_checkpoint_execute_still_resumes_from_the_latest(
    client: Client, engine: WorkflowEngine
) -> None:
    token = token_for(make_user("runner", VIEW, EXECUTE))  # no resume permission needed
    response = execute(client, token, "wf-2")
    assert response.status_code == 200 and response.json()["start_step"] == 0
    assert not AuditEntry.objects.filter(action="workflow.resume").exists()


def test_from_checkpoint_needs_the_resume_permission(
    client: Client, engine: WorkflowEngine
) -> None:
    engine.execute("wf-1")
    chosen = checkpoints("wf-1")[0]
    token = token_for(make_user("runner", VIEW, EXECUTE))
    response = execute(client, token, "wf-1", from_checkpoint=chosen.checkpoint_id)
    assert response.status_code == 403
    assert RESUME in response.json()["detail"]
    assert WorkflowRun.objects.count() == 1


def test_anonymous_callers_get_401(client: Client, engine: WorkflowEngine) -> None:
    response = client.post(
        "/api/workflows/wf-1/execute",
        {"from_checkpoint": "ck_00000000000000_000000000000"},
        content_type="application/json",
    )
    assert response.status_code == 401


def test_session_callers_need_the_csrf_token(engine: WorkflowEngine, resumer: User) -> None:
    engine.execute("wf-1")
    client = Client(enforce_csrf_checks=True)
    client.force_login(resumer)
    response = client.post(
        "/api/workflows/wf-1/execute",
        {"from_checkpoint": checkpoints("wf-1")[0].checkpoint_id},
        content_type="application/json",
    )
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert WorkflowRun.objects.count() == 1


@pytest.mark.parametrize(
    ("chosen", "status", "message"),
    [
        ("not-an-id", 422, "ck_<14 hex>_<12 hex>"),
        ("ck_00000000000000_000000000000", 404, "no checkpoint"),
        ("other", 422, "belongs to workflow 'wf-other'"),
        ("end", 422, "nothing is left to run"),
        ("corrupted", 409, "failed verification"),
    ],
)
def test_unusable_checkpoints_are_refused_with_a_clear_error(
    client: Client,
    engine: WorkflowEngine,
    resumer: User,
    media: Path,
    chosen: str,
    status: int,
    message: str,
) -> None:
    engine.execute("wf-1")
    engine.execute("wf-other")
    if chosen == "other":
        chosen = checkpoints("wf-other")[0].checkpoint_id
    elif chosen == "end":
        chosen = checkpoints("wf-1")[-1].checkpoint_id
    elif chosen == "corrupted":
        chosen = checkpoints("wf-1")[0].checkpoint_id
        path = media / "checkpoints" / f"{chosen}.ckpt"
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    runs = WorkflowRun.objects.count()
    response = execute(client, token_for(resumer), "wf-1", from_checkpoint=chosen)
    assert response.status_code == status, response.content
    assert message in str(response.json())
    assert WorkflowRun.objects.count() == runs
    assert not AuditEntry.objects.filter(action="workflow.resume").exists()


def test_engine_refuses_a_state_that_cannot_be_run_from(engine: WorkflowEngine) -> None:
    manager = store.get_manager()
    bad = manager.save_checkpoint({"version": 1, "next_step": "3"}, "orchestrator", "wf-x")
    with pytest.raises(NotResumable, match="next_step must be an integer"):
        engine.execute("wf-x", from_checkpoint=bad)
    other = manager.save_checkpoint({"version": 1, "next_step": 0}, "someone", "wf-x")
    with pytest.raises(NotResumable, match="agent 'someone'"):
        engine.execute("wf-x", from_checkpoint=other)


def test_workflow_progress_links_its_timeline_and_shows_lineage_both_ways(
    client: Client, engine: WorkflowEngine, resumer: User
) -> None:
    engine.execute("wf-1")
    parent = checkpoints("wf-1")[0]
    fork = fork_checkpoint(checkpoint_id=parent.checkpoint_id, new_workflow_id="wf-1-f")
    engine.execute("wf-1-f", from_checkpoint=fork.checkpoint_id)
    token = token_for(resumer)
    parent_body = client.get("/api/workflows/wf-1", **bearer(token)).json()
    assert parent_body["timeline_url"] == "/checkpoints/workflows/wf-1/"
    assert parent_body["forked_from"] is None
    assert [f["workflow_id"] for f in parent_body["forks"]] == ["wf-1-f"]
    child_body = client.get("/api/workflows/wf-1-f", **bearer(token)).json()
    assert child_body["forked_from"]["parent_checkpoint_id"] == parent.checkpoint_id
    assert child_body["forked_from"]["parent_workflow_id"] == "wf-1"
    assert child_body["runs"][0]["resumed_from"] == fork.checkpoint_id


def test_from_checkpoint_may_be_form_encoded_and_a_bad_body_is_400(
    client: Client, engine: WorkflowEngine, resumer: User
) -> None:
    engine.execute("wf-1")
    chosen = checkpoints("wf-1")[0].checkpoint_id
    token = token_for(resumer)
    form = client.post(
        "/api/workflows/wf-1/execute",
        f"from_checkpoint={chosen}&reason=curl",
        content_type="application/x-www-form-urlencoded",
        **bearer(token),
    )
    assert form.status_code == 200 and form.json()["resumed_from"] == chosen
    bad = client.post(
        "/api/workflows/wf-1/execute", "{nope", content_type="application/json", **bearer(token)
    )
    assert bad.status_code == 400
    long_reason = execute(client, token, "wf-1", from_checkpoint=chosen, reason="x" * 600)
    assert long_reason.status_code == 422
    assert long_reason.json()["detail"][0]["loc"] == ["body", "payload", "reason"]
