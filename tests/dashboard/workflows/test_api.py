"""POST /api/workflows/{id}/execute, GET /api/workflows/{id}, GET /api/workflows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.api import throttle
from dashboard.api.testing import bearer, make_user, token_for
from dashboard.traces import tracing
from dashboard.workflows import engine as engine_module
from dashboard.workflows import simulated
from dashboard.workflows.definition import AGENT_ID, STEPS
from dashboard.workflows.engine import WorkflowEngine, default_breaker_config
from dashboard.workflows.models import RunStatus, WorkflowRun
from dashboard.workflows.progress import RunRecorder
from dashboard.workflows.simulated import Pattern, ServiceWorld
from resilience.checkpoint import checkpoint_manager
from resilience.circuit_breaker import CircuitBreaker
from resilience.rate_limiter import rate_limiter_registry
from tests.dashboard.conftest import FakeClock

pytestmark = [
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(autouse=True)
def _spans_written() -> Iterator[None]:
    """Spans of this test are stored before its tables are emptied."""
    yield
    installed = tracing.processor()
    if installed is not None:
        installed.force_flush()


VIEW = "dashboard.view_dashboard"
EXECUTE = "workflows.execute_workflow"


@pytest.fixture(autouse=True)
def _media(settings: object, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"  # type: ignore[attr-defined]
    settings.API_RATE_LIMIT = "1000/60"  # type: ignore[attr-defined]
    settings.WORKFLOW_EXECUTE_RATE = "3/60"  # type: ignore[attr-defined]
    throttle.reset()


@pytest.fixture
def world(clock: FakeClock) -> Iterator[ServiceWorld]:
    patterns = {name: Pattern(latency_ms=5.0) for name in simulated.SERVICE_NAMES}
    created = ServiceWorld(patterns, clock=clock, sleep=clock.advance, seed=2)
    for name in patterns:
        CircuitBreaker(name, default_breaker_config(), clock=clock)
    previous = engine_module.install(
        WorkflowEngine(created, progress=RunRecorder(), checkpoint_interval=3, clock=clock)
    )
    yield created
    engine_module.install(previous)


@pytest.fixture
def runner() -> User:
    return make_user("runner", VIEW, EXECUTE)


@pytest.fixture
def token(runner: User) -> str:
    return token_for(runner)


def test_execute_runs_the_workflow_and_returns_status_trace_and_checkpoint(
    client: Client, world: ServiceWorld, token: str
) -> None:
    response = client.post("/api/workflows/report-1/execute", **bearer(token))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded" and body["workflow_id"] == "report-1"
    assert body["step"] == body["total_steps"] == len(STEPS)
    assert len(body["trace_id"]) == 32
    latest = checkpoint_manager.get_latest_checkpoint(agent_id=AGENT_ID, workflow_id="report-1")
    assert body["checkpoint_id"] == latest
    assert body["caller"] == "runner"
    row = WorkflowRun.objects.get(pk=body["run_id"])
    assert (row.status, row.trace_id, row.finished_at is not None) == (
        RunStatus.SUCCEEDED,
        body["trace_id"],
        True,
    )


def test_progress_shows_step_agent_checkpoint_and_runs(
    client: Client, world: ServiceWorld, token: str
) -> None:
    client.post("/api/workflows/report-2/execute", **bearer(token))
    response = client.get("/api/workflows/report-2", **bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["step"], body["agent"], body["running"]) == (
        "succeeded",
        len(STEPS),
        "writer",
        False,
    )
    assert body["checkpoint_id"] == body["runs"][0]["checkpoint_id"]
    assert len(body["runs"]) == 1


def test_a_workflow_that_never_ran_is_404(client: Client, world: ServiceWorld, token: str) -> None:
    response = client.get("/api/workflows/nobody", **bearer(token))
    assert response.status_code == 404
    assert response.json() == {"detail": "no workflow 'nobody' has run"}


def test_recent_runs_are_listed_newest_first_and_filterable(
    client: Client, world: ServiceWorld, token: str
) -> None:
    for name in ("a-1", "a-2"):
        client.post(f"/api/workflows/{name}/execute", **bearer(token))
    body = client.get("/api/workflows", **bearer(token)).json()
    assert [item["workflow_id"] for item in body["items"]] == ["a-2", "a-1"]
    assert body["count"] == 2
    failed = client.get("/api/workflows?status=failed", **bearer(token)).json()
    assert failed == {"items": [], "count": 0}
    bad = client.get("/api/workflows?limit=0", **bearer(token))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "limit"]


def test_a_failed_run_is_a_503_with_retry_after_and_the_next_execute_resumes(
    client: Client, world: ServiceWorld, token: str, clock: FakeClock
) -> None:
    world.set_pattern("payments", Pattern(mode="down", latency_ms=5.0))
    failed = client.post("/api/workflows/pay-1/execute", **bearer(token))
    assert failed.status_code == 503
    body = failed.json()
    assert body["status"] == "failed" and "payments unavailable" in body["error"]
    assert body["step"] == 6 and body["checkpoint_id"]
    world.restore("payments")
    resumed = client.post("/api/workflows/pay-1/execute", **bearer(token))
    assert resumed.status_code == 200
    again = resumed.json()
    assert (again["status"], again["start_step"], again["resumed_from"]) == (
        "succeeded",
        6,
        body["checkpoint_id"],
    )


def test_an_open_breaker_answers_503_with_the_breakers_retry_after(
    client: Client, world: ServiceWorld, token: str
) -> None:
    from resilience.circuit_breaker import circuit_breaker_registry

    breaker = circuit_breaker_registry.get("payments")
    assert breaker is not None
    breaker.force_open()
    response = client.post("/api/workflows/pay-2/execute", **bearer(token))
    assert response.status_code == 503
    assert "payments unavailable" in response.json()["error"]


def test_executions_are_limited_per_caller_with_ratelimit_headers(
    client: Client, world: ServiceWorld, token: str
) -> None:
    codes = [
        client.post(f"/api/workflows/burst-{n}/execute", **bearer(token)).status_code
        for n in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    refused = client.post("/api/workflows/burst-9/execute", **bearer(token))
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert refused["RateLimit-Limit"] == "3" and refused["RateLimit-Remaining"] == "0"
    assert "rate limit exceeded" in refused.json()["detail"]
    assert not WorkflowRun.objects.filter(workflow_id="burst-9").exists()
    limiter = rate_limiter_registry.get("workflows.execute")
    assert limiter is not None and limiter.rejected == 2
    # Another caller has its own budget.
    other = token_for(make_user("other", VIEW, EXECUTE))
    assert client.post("/api/workflows/x-1/execute", **bearer(other)).status_code == 200


def test_execute_needs_authentication_and_the_permission(
    client: Client, world: ServiceWorld
) -> None:
    anonymous = client.post("/api/workflows/w-1/execute")
    assert anonymous.status_code == 401
    viewer = token_for(make_user("viewer", VIEW))
    forbidden = client.post("/api/workflows/w-1/execute", **bearer(viewer))
    assert forbidden.status_code == 403
    assert "workflows.execute_workflow" in forbidden.json()["detail"]
    assert client.get("/api/workflows", **bearer(viewer)).status_code == 200
    assert not WorkflowRun.objects.exists()


def test_session_callers_need_the_csrf_token(world: ServiceWorld, runner: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(runner)
    refused = browser.post("/api/workflows/w-2/execute")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    secret = "s" * 32  # CSRF_COOKIE's secret; the unmasked secret is a valid token
    browser.cookies["csrftoken"] = secret
    ok = browser.post("/api/workflows/w-2/execute", HTTP_X_CSRFTOKEN=secret)
    assert ok.status_code == 200, ok.content


@pytest.mark.parametrize("bad", ["-x", "a%20b", "x" * 129])
def test_invalid_workflow_ids_are_422_naming_the_path_field(
    client: Client, world: ServiceWorld, token: str, bad: str
) -> None:
    response = client.post(f"/api/workflows/{bad}/execute", **bearer(token))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "workflow_id"]


def test_the_openapi_schema_documents_the_three_operations(client: Client, token: str) -> None:
    schema = client.get("/api/workflows/openapi.json", **bearer(token)).json()
    assert set(schema["paths"]) == {
        "/api/workflows",
        "/api/workflows/{workflow_id}",
        "/api/workflows/{workflow_id}/execute",
    }
    execute = schema["paths"]["/api/workflows/{workflow_id}/execute"]["post"]
    assert {"200", "401", "403", "409", "422", "429", "503"} <= set(execute["responses"])
