"""HTTP server metrics by route: bounded labels, seconds, every status."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard.api.http_metrics import DURATION, REQUESTS
from resilience import telemetry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_metrics() -> None:
    telemetry.metrics.reset()


def requests() -> dict[str, float]:
    return {
        key: value
        for key, value in telemetry.metrics.snapshot()["counters"].items()
        if key.startswith(REQUESTS)
    }


def test_requests_are_counted_by_route_pattern_not_path(client: Client) -> None:
    client.get("/breakers/some-breaker/reset/")  # a pattern with a parameter (GET: 405)
    client.get("/breakers/other/reset/")
    client.get("/accounts/login/")
    counted = requests()
    assert counted[f'{REQUESTS}{{method="GET",route="/accounts/login/",status="200"}}'] == 1.0
    routes = [key for key in counted if "breakers" in key]
    assert len(routes) == 1, routes
    assert "some-breaker" not in routes[0] and "<path:name>" in routes[0]
    assert counted[routes[0]] == 2.0


def test_unmatched_paths_and_odd_methods_share_one_label(client: Client) -> None:
    client.get("/no/such/page/1")
    client.get("/no/such/page/2")
    client.generic("BREW", "/accounts/login/")
    counted = requests()
    assert counted[f'{REQUESTS}{{method="GET",route="<unmatched>",status="404"}}'] == 2.0
    assert any('method="OTHER"' in key for key in counted)


def test_durations_are_a_seconds_histogram(client: Client) -> None:
    client.get("/accounts/login/")
    body = telemetry.metrics.render_prometheus().decode()
    assert "http_server_request_duration_seconds_bucket{" in body
    histograms = telemetry.metrics.snapshot()["histograms"]
    key = f'{DURATION}{{method="GET",route="/accounts/login/",status="200"}}'
    assert histograms[key]["count"] == 1
