"""Every page and every mutation needs ``dashboard.view_dashboard``, mutations their own too."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard.api import testing, throttle
from dashboard.models import AuditEntry
from dashboard.workflows import simulated

pytestmark = pytest.mark.django_db

VIEW = "dashboard.view_dashboard"
TRACES = ["/traces/", f"/traces/{'ab' * 16}/", f"/traces/{'ab' * 16}/spans/{'cd' * 8}/"]


@pytest.fixture(autouse=True)
def _isolated() -> None:
    throttle.reset()


def _client(*permissions: str) -> Client:
    client = Client()
    client.force_login(testing.make_user("someone", *permissions))
    return client


@pytest.mark.parametrize("url", TRACES)
def test_trace_pages_refuse_a_user_with_only_view_spanrecord(url: str) -> None:
    assert _client("traces.view_spanrecord").get(url).status_code == 403


def test_trace_search_opens_for_a_dashboard_viewer() -> None:
    assert _client(VIEW).get("/traces/").status_code == 200


def test_api_metrics_reset_needs_the_view_permission_too() -> None:
    user = testing.make_user("resetter", "dashboard.reset_metrics")
    response = Client().post(
        "/api/observability/metrics/reset", **testing.bearer(testing.token_for(user))
    )
    assert response.status_code == 403
    assert VIEW in response.json()["detail"]
    assert not AuditEntry.objects.filter(action="metrics.reset").exists()


def test_set_pattern_needs_the_view_permission_too() -> None:
    before = simulated.world().pattern("payments").mode
    response = _client("workflows.operate_simulation").post(
        "/simulation/pattern/", {"service": "payments", "pattern": "down"}
    )
    assert response.status_code == 403
    assert simulated.world().pattern("payments").mode == before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "url", ["/api/observability/docs", "/api/observability/openapi.json", "/api/workflows/docs"]
)
def test_api_docs_need_a_login_unless_made_public(url: str, settings: object) -> None:
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert _client(VIEW).get(url).status_code == 200
    settings.API_DOCS_PUBLIC = True  # type: ignore[attr-defined]
    assert Client().get(url).status_code == 200
