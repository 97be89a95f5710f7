"""Circuit breaker and rate limiter endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.api import testing, throttle
from dashboard.breakers import recorder
from dashboard.breakers.models import BreakerEvent
from dashboard.models import AuditEntry
from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState, circuit_breaker_registry
from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, RateLimiter
from tests.clock import FakeClock

BASE = "/api/observability"


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    throttle.reset()
    yield


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


@pytest.fixture
def operator_user() -> User:
    return testing.make_user("olga", "dashboard.view_dashboard", "breakers.reset_breaker")


@pytest.fixture
def operator(operator_user: User) -> dict[str, str]:
    return testing.bearer(testing.token_for(operator_user))


# History assertions use breaker names no test trips ("ledger", "quiet"): the recorder
# writes other tests' transitions from its own thread, outside their transactions.
def event(name: str, minutes_ago: int, to_state: str = "open") -> BreakerEvent:
    return BreakerEvent.objects.create(
        breaker=name,
        from_state="closed",
        to_state=to_state,
        reason="failure_threshold",
        failure_count=5,
        occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        process="host:1",
    )


# ---- breakers --------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_returns_every_breaker_snapshot(client: Client, viewer: dict[str, str]) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig(failure_threshold=3))
    circuit_breaker_registry.get_or_create("llm", CircuitBreakerConfig()).force_open()
    body = client.get(f"{BASE}/circuit-breakers", **viewer).json()
    assert body["count"] == 2
    by_name = {item["name"]: item for item in body["items"]}
    assert by_name["pay"]["state"] == "closed"
    assert by_name["pay"]["config"]["failure_threshold"] == 3
    assert by_name["llm"]["state"] == "forced_open"


@pytest.mark.django_db
def test_detail_and_unknown_name(client: Client, viewer: dict[str, str]) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    assert client.get(f"{BASE}/circuit-breakers/pay", **viewer).json()["name"] == "pay"
    response = client.get(f"{BASE}/circuit-breakers/ghost", **viewer)
    assert response.status_code == 404
    assert "ghost" in response.json()["detail"]


@pytest.mark.django_db
def test_tripped_breaker_shows_its_last_failure_and_counts(
    client: Client, viewer: dict[str, str]
) -> None:
    breaker = circuit_breaker_registry.get_or_create(
        "llm", CircuitBreakerConfig(failure_threshold=1)
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    body = client.get(f"{BASE}/circuit-breakers/llm", **viewer).json()
    assert body["state"] == "open"
    assert body["last_failure"]["type"] == "ZeroDivisionError"
    assert body["calls"]["failed"] == 1
    assert body["seconds_until_half_open"] > 0


@pytest.mark.django_db
def test_reads_need_auth_and_view_permission(client: Client) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    assert client.get(f"{BASE}/circuit-breakers").status_code == 401
    nobody = testing.bearer(testing.token_for(testing.make_user("nobody")))
    assert client.get(f"{BASE}/circuit-breakers/pay", **nobody).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_reset_with_reason_closes_audits_and_lands_in_history(
    client: Client, operator: dict[str, str], operator_user: User
) -> None:
    assert recorder.flush()  # rows other tests' breakers queued
    BreakerEvent.objects.all().delete()
    breaker = circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    breaker.force_open()
    response = client.post(
        f"{BASE}/circuit-breakers/pay/reset",
        {"reason": "provider is back"},
        content_type="application/json",
        **operator,
    )
    assert response.status_code == 200
    assert response.json()["state"] == "closed"
    assert breaker.state is CircuitState.CLOSED
    entry = AuditEntry.objects.get(action="breaker.reset")
    assert (entry.user, entry.source, entry.target, entry.reason) == (
        operator_user,
        "api",
        "pay",
        "provider is back",
    )
    assert recorder.flush()
    row = BreakerEvent.objects.get(breaker="pay", to_state="closed", actor="olga")
    assert (row.actor, row.note) == ("olga", "provider is back")


@pytest.mark.django_db
@pytest.mark.parametrize("body", [None, "", "{}"])
def test_reset_accepts_no_body(client: Client, operator: dict[str, str], body: str | None) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig()).force_open()
    if body is None:
        response = client.post(f"{BASE}/circuit-breakers/pay/reset", **operator)
    else:
        response = client.post(
            f"{BASE}/circuit-breakers/pay/reset", body, content_type="application/json", **operator
        )
    assert response.status_code == 200
    assert AuditEntry.objects.get(action="breaker.reset").reason == ""


@pytest.mark.django_db
def test_reset_needs_the_reset_permission(client: Client, viewer: dict[str, str]) -> None:
    breaker = circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    breaker.force_open()
    response = client.post(f"{BASE}/circuit-breakers/pay/reset", **viewer)
    assert response.status_code == 403
    assert "breakers.reset_breaker" in response.json()["detail"]
    assert breaker.state is CircuitState.FORCED_OPEN
    assert not AuditEntry.objects.filter(action="breaker.reset").exists()


@pytest.mark.django_db
def test_reset_of_unknown_breaker_is_404(client: Client, operator: dict[str, str]) -> None:
    assert client.post(f"{BASE}/circuit-breakers/ghost/reset", **operator).status_code == 404
    assert not AuditEntry.objects.filter(action="breaker.reset").exists()


@pytest.mark.django_db
def test_overlong_reason_is_422_naming_the_field(client: Client, operator: dict[str, str]) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    response = client.post(
        f"{BASE}/circuit-breakers/pay/reset",
        {"reason": "r" * 501},
        content_type="application/json",
        **operator,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "reason"


@pytest.mark.django_db
def test_malformed_json_body_is_400_not_500(client: Client, operator: dict[str, str]) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig())
    response = client.post(
        f"{BASE}/circuit-breakers/pay/reset", "{nope", content_type="application/json", **operator
    )
    assert response.status_code == 400


@pytest.mark.django_db
def test_events_are_paginated_newest_first(client: Client, viewer: dict[str, str]) -> None:
    for minutes in range(5):
        event("ledger", minutes_ago=minutes)
    event("other", minutes_ago=0)
    first = client.get(f"{BASE}/circuit-breakers/ledger/events?page_size=2", **viewer).json()
    assert (first["total"], first["has_next"], len(first["items"])) == (5, True, 2)
    times = [item["occurred_at"] for item in first["items"]]
    assert times == sorted(times, reverse=True)
    last = client.get(f"{BASE}/circuit-breakers/ledger/events?page_size=2&page=3", **viewer).json()
    assert (last["total"], last["has_next"], len(last["items"])) == (5, False, 1)
    assert {item["breaker"] for item in first["items"] + last["items"]} == {"ledger"}


@pytest.mark.django_db
def test_events_of_a_breaker_only_known_from_history_are_served(
    client: Client, viewer: dict[str, str]
) -> None:
    event("elsewhere", minutes_ago=1)  # e.g. a breaker of another process
    assert client.get(f"{BASE}/circuit-breakers/elsewhere/events", **viewer).status_code == 200


@pytest.mark.django_db
def test_events_of_a_registered_breaker_without_history_are_empty(
    client: Client, viewer: dict[str, str]
) -> None:
    circuit_breaker_registry.get_or_create("quiet", CircuitBreakerConfig())
    body = client.get(f"{BASE}/circuit-breakers/quiet/events", **viewer).json()
    assert (body["total"], body["items"]) == (0, [])


@pytest.mark.django_db
def test_events_of_an_unknown_breaker_are_404(client: Client, viewer: dict[str, str]) -> None:
    assert client.get(f"{BASE}/circuit-breakers/ghost/events", **viewer).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["page=0", "page_size=0", "page_size=501", "page=x"])
def test_bad_paging_is_422_naming_the_field(
    client: Client, viewer: dict[str, str], query: str
) -> None:
    event("ledger", minutes_ago=1)
    response = client.get(f"{BASE}/circuit-breakers/ledger/events?{query}", **viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == query.split("=")[0]


# ---- rate limiters ---------------------------------------------------------------------


@pytest.mark.django_db
def test_limiters_list_and_detail(client: Client, viewer: dict[str, str], clock: FakeClock) -> None:
    # A fake clock: no token refills while the requests run, however slow the machine.
    bucket = RateLimiter(
        RateLimitConfig(max_requests=10, time_window=60), name="search", clock=clock
    )
    bucket.try_acquire()
    keyed = KeyedRateLimiter(RateLimitConfig(max_requests=2, time_window=1), name="per-user")
    keyed.try_acquire("u1")
    body = client.get(f"{BASE}/rate-limiters", **viewer).json()
    assert body["count"] == 2
    assert {item["name"]: item["kind"] for item in body["items"]} == {
        "search": "bucket",
        "per-user": "keyed",
    }
    detail = client.get(f"{BASE}/rate-limiters/per-user", **viewer).json()
    assert detail["keys"] == 1 and detail["allowed"] == 1
    assert detail["busiest_keys"][0]["key"] == "u1"
    single = client.get(f"{BASE}/rate-limiters/search", **viewer).json()
    assert (single["allowed"], single["capacity"]) == (1, 10)
    assert single["available_tokens"] == pytest.approx(9, abs=0.01)


@pytest.mark.django_db
def test_unknown_limiter_is_404_and_reads_need_auth(client: Client, viewer: dict[str, str]) -> None:
    assert client.get(f"{BASE}/rate-limiters/ghost", **viewer).status_code == 404
    assert client.get(f"{BASE}/rate-limiters").status_code == 401
