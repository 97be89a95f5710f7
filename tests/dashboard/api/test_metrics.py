"""Metrics: the JSON snapshot, the audited reset, and the Prometheus scrape endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from dashboard.api import testing, throttle
from dashboard.models import AuditEntry
from resilience import telemetry

BASE = "/api/observability"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    throttle.reset()
    telemetry.metrics.reset()
    yield
    telemetry.metrics.reset()


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


def test_snapshot_lists_counters_gauges_and_histograms(
    client: Client, viewer: dict[str, str]
) -> None:
    telemetry.metrics.increment_counter("tasks.completed", 3)
    telemetry.metrics.set_gauge("active_agents", 5, labels={"pool": "gpu"})
    telemetry.metrics.record_histogram("task_duration_ms", 250.5)
    body = client.get(f"{BASE}/metrics", **viewer).json()
    assert body["counters"] == {"tasks.completed": 3.0}
    assert body["gauges"] == {'active_agents{pool="gpu"}': 5.0}
    histogram = body["histograms"]["task_duration_ms"]
    assert (histogram["count"], histogram["sum"], histogram["p50"]) == (1, 250.5, 250.5)


def _without_http(series: dict[str, float]) -> dict[str, float]:
    """The series minus the HTTP middleware's own (it counts the request after the view)."""
    return {key: value for key, value in series.items() if not key.startswith("http.server.")}


def test_reset_clears_metrics_and_is_audited_with_the_reason(client: Client) -> None:
    user = testing.make_user("ada", "dashboard.view_dashboard", "dashboard.reset_metrics")
    telemetry.metrics.increment_counter("tasks.completed")
    response = client.post(
        f"{BASE}/metrics/reset",
        {"reason": "new load test"},
        content_type="application/json",
        **testing.bearer(testing.token_for(user)),
    )
    assert response.status_code == 200
    entry = AuditEntry.objects.get(action="metrics.reset")
    assert response.json()["audit_id"] == entry.pk
    assert (entry.user, entry.source, entry.reason) == (user, "api", "new load test")
    assert _without_http(telemetry.metrics.snapshot()["counters"]) == {}


def test_reset_needs_the_reset_permission(client: Client, viewer: dict[str, str]) -> None:
    telemetry.metrics.increment_counter("tasks.completed")
    response = client.post(f"{BASE}/metrics/reset", **viewer)
    assert response.status_code == 403
    assert "dashboard.reset_metrics" in response.json()["detail"]
    assert _without_http(telemetry.metrics.snapshot()["counters"]) == {"tasks.completed": 1.0}
    assert not AuditEntry.objects.filter(action="metrics.reset").exists()


def test_reset_needs_authentication(client: Client) -> None:
    assert client.post(f"{BASE}/metrics/reset").status_code == 401


# ---- /metrics (Prometheus) -------------------------------------------------------------


def scrape(client: Client, addr: str = "127.0.0.1", token: str | None = None) -> Any:
    headers = {"REMOTE_ADDR": addr}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get("/metrics", **headers)


def test_loopback_scrape_gets_prometheus_text(client: Client) -> None:
    telemetry.metrics.increment_counter("tasks.completed")
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"] == telemetry.PROMETHEUS_CONTENT_TYPE
    assert b"tasks_completed_total 1.0" in response.content


@pytest.mark.parametrize("addr", ["::1", "::ffff:127.0.0.1"])
def test_ipv6_loopback_is_allowed_by_default(client: Client, addr: str) -> None:
    assert scrape(client, addr).status_code == 200


def test_other_networks_are_403_by_default(client: Client) -> None:
    assert scrape(client, "10.1.2.3").status_code == 403


@override_settings(METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
def test_allowed_networks_are_configurable(client: Client) -> None:
    assert scrape(client, "10.1.2.3").status_code == 200
    assert scrape(client, "127.0.0.1").status_code == 403


@override_settings(METRICS_TOKEN="s3cret-scrape", METRICS_ALLOWED_NETWORKS=[])
def test_token_lets_any_address_in_and_a_missing_or_wrong_token_is_401(client: Client) -> None:
    assert scrape(client, "203.0.113.9", token="s3cret-scrape").status_code == 200
    missing = scrape(client, "203.0.113.9")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, "127.0.0.1", token="wrong").status_code == 401


@override_settings(METRICS_TOKEN="s3cret-scrape", METRICS_REQUIRE_BOTH=True)
def test_requiring_both_needs_token_and_network(client: Client) -> None:
    assert scrape(client, "127.0.0.1", token="s3cret-scrape").status_code == 200
    assert scrape(client, "127.0.0.1").status_code == 401
    assert scrape(client, "10.0.0.1", token="s3cret-scrape").status_code == 403


def test_scrape_is_get_only(client: Client) -> None:
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405
