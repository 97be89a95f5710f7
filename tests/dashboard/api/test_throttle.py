"""Per user / per token rate limiting of the API: 429 and the RateLimit-* headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from dashboard.api import testing, throttle
from tests.clock import FakeClock

URL = "/api/observability/rate-limiters"
pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(settings: Any) -> Iterator[FakeClock]:
    fake = FakeClock(1000.0)
    settings.API_RATE_LIMIT = "3/60"
    throttle.reset(clock=fake)
    yield fake
    throttle.reset()


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


def test_success_carries_ratelimit_headers(
    client: Client, clock: FakeClock, viewer: dict[str, str]
) -> None:
    response = client.get(URL, **viewer)
    assert response.status_code == 200
    assert (response["RateLimit-Limit"], response["RateLimit-Remaining"]) == ("3", "2")
    assert response["RateLimit-Reset"] == "20"  # one token refills in 60/3 s


def test_over_the_limit_is_429_with_retry_after(
    client: Client, clock: FakeClock, viewer: dict[str, str]
) -> None:
    for _ in range(3):
        assert client.get(URL, **viewer).status_code == 200
    refused = client.get(URL, **viewer)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "20"
    assert (refused["RateLimit-Limit"], refused["RateLimit-Remaining"]) == ("3", "0")
    assert refused["RateLimit-Reset"] == "60"
    assert "rate limit" in refused.json()["detail"]


def test_budget_refills_with_time(client: Client, clock: FakeClock, viewer: dict[str, str]) -> None:
    for _ in range(3):
        client.get(URL, **viewer)
    assert client.get(URL, **viewer).status_code == 429
    clock.now += 20
    assert client.get(URL, **viewer).status_code == 200
    assert client.get(URL, **viewer).status_code == 429


def test_each_token_and_user_has_its_own_budget(client: Client, clock: FakeClock) -> None:
    user = testing.make_user("vera", "dashboard.view_dashboard")
    first, second = testing.bearer(testing.token_for(user)), testing.bearer(testing.token_for(user))
    for _ in range(3):
        client.get(URL, **first)
    assert client.get(URL, **first).status_code == 429
    assert client.get(URL, **second).status_code == 200
    client.force_login(user)
    assert client.get(URL).status_code == 200


def test_callers_without_permission_are_limited_too(client: Client, clock: FakeClock) -> None:
    nobody = testing.bearer(testing.token_for(testing.make_user("nobody")))
    statuses = [client.get(URL, **nobody).status_code for _ in range(4)]
    assert statuses == [403, 403, 403, 429]


def test_anonymous_health_is_limited_per_address(client: Client, clock: FakeClock) -> None:
    url = "/api/observability/health"
    statuses = [client.get(url, REMOTE_ADDR="10.0.0.1").status_code for _ in range(4)]
    assert statuses[-1] == 429
    assert client.get(url, REMOTE_ADDR="10.0.0.2").status_code != 429


def test_empty_setting_disables_limiting(
    client: Client, settings: Any, viewer: dict[str, str]
) -> None:
    settings.API_RATE_LIMIT = ""
    throttle.reset()
    responses = [client.get(URL, **viewer) for _ in range(5)]
    assert {r.status_code for r in responses} == {200}
    assert "RateLimit-Limit" not in responses[0]


@pytest.mark.parametrize("value", ["120", "a/b", "0/60", "10/0", 120])
def test_bad_setting_is_improperly_configured(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="API_RATE_LIMIT"):
        throttle.parse_rate(value)


def test_setting_parses_requests_per_seconds() -> None:
    config = throttle.parse_rate("120/60")
    assert config is not None
    assert (config.max_requests, config.window_seconds) == (120, 60.0)
