"""GET /health: status for everyone, the checks for permitted callers, 503 when down."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.utils import OperationalError
from django.test import Client

from dashboard.api import healthchecks, testing, throttle
from dashboard.ingest import stats as ingest_stats
from dashboard.traces import tracing
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

URL = "/api/observability/health"
CHECKS = {
    "database",
    "channel_layer",
    "checkpoint_storage",
    "span_queue",
    "span_ingest",
    "breakers",
}
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Any) -> Iterator[None]:
    throttle.reset()
    settings.MEDIA_ROOT = tmp_path
    stats = {"queued": 0, "dropped": 0, "written": 0, "failed": 0, "failed_batches": 0}
    monkeypatch.setattr(tracing, "stats", lambda: dict(stats))
    monkeypatch.setattr(healthchecks, "_last_lost", None)
    monkeypatch.setattr(healthchecks, "_last_refused", None)
    monkeypatch.setattr(ingest_stats, "_counts", dict.fromkeys(ingest_stats.snapshot(), 0))
    yield


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


def test_anonymous_gets_status_only(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_permitted_caller_gets_every_check(client: Client, viewer: dict[str, str]) -> None:
    body = client.get(URL, **viewer).json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    assert {check["status"] for check in body["checks"].values()} == {"ok"}
    assert body["checks"]["channel_layer"]["data"]["backend"] == "InMemoryChannelLayer"


def test_logged_in_user_without_view_permission_gets_status_only(client: Client) -> None:
    client.force_login(testing.make_user("nobody"))
    assert client.get(URL).json() == {"status": "ok"}


def test_invalid_token_is_401_even_here(client: Client) -> None:
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer rdt_nope").status_code == 401


def test_database_failure_is_down_and_503(
    client: Client, viewer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreachable:
        vendor = "postgresql"

        def cursor(self) -> None:
            raise OperationalError("connection refused")

    # Only the health check's own connection handle: authentication still works.
    monkeypatch.setattr(healthchecks, "connection", Unreachable())
    anonymous = client.get(URL)
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "down"})
    detailed = client.get(URL, **viewer)
    assert detailed.status_code == 503
    database = detailed.json()["checks"]["database"]
    assert database["status"] == "down" and "connection refused" in database["detail"]


def test_a_check_that_raises_is_reported_not_a_500(
    client: Client, viewer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> healthchecks.Check:
        raise RuntimeError("bug")

    monkeypatch.setitem(healthchecks.CHECKS, "breakers", broken)
    body = client.get(URL, **viewer).json()
    assert body["status"] == "degraded"
    assert "RuntimeError: bug" in body["checks"]["breakers"]["detail"]


def test_open_breaker_degrades_and_is_named(client: Client, viewer: dict[str, str]) -> None:
    circuit_breaker_registry.get_or_create("pay", CircuitBreakerConfig()).force_open()
    circuit_breaker_registry.get_or_create("llm", CircuitBreakerConfig())
    anonymous = client.get(URL)
    assert (anonymous.status_code, anonymous.json()) == (200, {"status": "degraded"})
    breakers = client.get(URL, **viewer).json()["checks"]["breakers"]
    assert (breakers["status"], breakers["data"]["open"]) == ("degraded", ["pay"])


def test_span_drops_degrade_until_the_next_check(
    client: Client, viewer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"queued": 0, "dropped": 0, "written": 10, "failed": 0, "failed_batches": 0}
    monkeypatch.setattr(tracing, "stats", lambda: dict(counts))
    assert client.get(URL, **viewer).json()["checks"]["span_queue"]["status"] == "ok"
    counts["dropped"] = 7
    spans = client.get(URL, **viewer).json()["checks"]["span_queue"]
    assert spans["status"] == "degraded" and "7 spans" in spans["detail"]
    assert spans["data"]["dropped"] == 7
    assert client.get(URL, **viewer).json()["checks"]["span_queue"]["status"] == "ok"


def test_channel_layer_failure_degrades(
    client: Client, viewer: dict[str, str], settings: Any
) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no.such.Layer"}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        body = client.get(URL, **viewer).json()
    finally:
        channel_layers.backends.clear()
    assert body["status"] == "degraded"
    assert body["checks"]["channel_layer"]["status"] == "degraded"


def test_unwritable_checkpoint_storage_degrades(
    client: Client, viewer: dict[str, str], settings: Any, tmp_path: Any
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings.MEDIA_ROOT = blocker
    body = client.get(URL, **viewer).json()
    assert body["checks"]["checkpoint_storage"]["status"] == "degraded"
    assert body["status"] == "degraded"


@pytest.mark.django_db(transaction=True)
async def test_health_answers_under_asgi_too() -> None:
    # Under daphne the sync view runs in a worker thread: the channel-layer round trip
    # (async_to_sync there) must still work.
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    def make_token() -> str:
        return testing.token_for(testing.make_user("vera", "dashboard.view_dashboard"))

    token = await sync_to_async(make_token)()
    client = AsyncClient()
    anonymous = await client.get(URL)
    assert (anonymous.status_code, anonymous.json()) == (200, {"status": "ok"})
    detailed = await client.get(URL, headers={"Authorization": f"Bearer {token}"})
    checks = detailed.json()["checks"]
    assert checks["channel_layer"]["status"] == "ok"
    assert checks["database"]["status"] == "ok"
