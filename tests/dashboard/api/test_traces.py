"""GET /traces (search, paginated) and GET /traces/{trace_id} (every span)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from dashboard.api import testing, throttle
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.services import write_spans

BASE = "/api/observability/traces"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    throttle.reset()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    yield


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


def tid(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


@pytest.fixture
def shop() -> dict[str, Span]:
    """A slow trace with a failing child, and a fast one from another service."""
    memory = InMemorySpanExporter()
    providers = {}
    for service in ("shop", "payments"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        provider.add_span_processor(SimpleSpanProcessor(memory))
        providers[service] = provider.get_tracer("test")
    now = time.time_ns()
    slow = providers["shop"].start_span(
        "GET /orders", start_time=now - int(30e9), attributes={"http.status_code": 500}
    )
    child = providers["shop"].start_span(
        "db.query",
        context=trace.set_span_in_context(slow),
        start_time=now - int(29.9e9),
        attributes={"db.table": "orders"},
    )
    child.set_status(Status(StatusCode.ERROR, "boom"))
    child.add_event("retry", attributes={"attempt": 2})
    child.end(end_time=now - int(29.9e9) + int(700e6))
    slow.end(end_time=now - int(30e9) + int(900e6))
    fast = providers["payments"].start_span("charge", start_time=now - int(10e9))
    fast.end(end_time=now - int(10e9) + int(5e6))
    write_spans(memory.get_finished_spans(), masker=Masker(()))
    return {"slow": slow, "child": child, "fast": fast}


def ids(body: dict[str, Any]) -> list[str]:
    return [item["trace_id"] for item in body["items"]]


def test_search_lists_traces_newest_first_with_counts(
    client: Client, viewer: dict[str, str], shop: dict[str, Span]
) -> None:
    body = client.get(BASE, **viewer).json()
    assert ids(body) == [tid(shop["fast"]), tid(shop["slow"])]
    assert (body["total"], body["has_next"], body["total_capped"]) == (2, False, False)
    slow = body["items"][1]
    assert (slow["root_name"], slow["span_count"], slow["error_count"]) == ("GET /orders", 2, 1)
    assert slow["duration_us"] == 900_000


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "payments"}, ["fast"]),
        ({"name": "db.query"}, ["slow"]),
        ({"attribute": "http.status_code=500"}, ["slow"]),
        ({"errors_only": "true"}, ["slow"]),
        ({"min_duration_us": 100_000}, ["slow"]),
        ({"max_duration_us": 100_000}, ["fast"]),
        ({"sort": "longest"}, ["slow", "fast"]),
    ],
)
def test_search_filters_and_sorts(
    client: Client,
    viewer: dict[str, str],
    shop: dict[str, Span],
    params: dict[str, Any],
    expected: list[str],
) -> None:
    body = client.get(BASE, params, **viewer).json()
    assert ids(body) == [tid(shop[name]) for name in expected]


def test_search_filters_on_the_calling_service(client: Client, viewer: dict[str, str]) -> None:
    memory = InMemorySpanExporter()
    tracers = {}
    for service in ("shop", "payments"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracers[service] = provider.get_tracer("test")
    root = tracers["shop"].start_span("POST /pay")
    tracers["payments"].start_span("charge", context=trace.set_span_in_context(root)).end()
    root.end()
    alone = tracers["payments"].start_span("charge")  # payments, called by nobody
    alone.end()
    write_spans(memory.get_finished_spans(), masker=Masker(()))
    called = client.get(BASE, {"service": "payments", "caller": "shop"}, **viewer).json()
    assert ids(called) == [tid(root)]
    assert len(ids(client.get(BASE, {"service": "payments"}, **viewer).json())) == 2
    assert ids(client.get(BASE, {"caller": "payments"}, **viewer).json()) == []


def test_search_time_range(client: Client, viewer: dict[str, str], shop: dict[str, Span]) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    assert ids(client.get(BASE, {"since": since}, **viewer).json()) == [tid(shop["fast"])]
    assert ids(client.get(BASE, {"until": since}, **viewer).json()) == [tid(shop["slow"])]


def test_search_paginates(client: Client, viewer: dict[str, str], shop: dict[str, Span]) -> None:
    first = client.get(BASE, {"page_size": 1}, **viewer).json()
    assert (ids(first), first["has_next"], first["total"]) == ([tid(shop["fast"])], True, 2)
    second = client.get(BASE, {"page_size": 1, "page": 2}, **viewer).json()
    assert (ids(second), second["has_next"]) == ([tid(shop["slow"])], False)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"attribute": "no-equals-sign"}, "attribute"),
        ({"min_duration_us": -1}, "min_duration_us"),
        ({"min_duration_us": 5, "max_duration_us": 1}, "max_duration_us"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"sort": "random"}, "sort"),
        ({"page": 0}, "page"),
    ],
)
def test_bad_search_parameters_are_422_naming_the_field(
    client: Client, viewer: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = client.get(BASE, params, **viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field


def test_trace_detail_has_every_span_with_parents_durations_and_attributes(
    client: Client, viewer: dict[str, str], shop: dict[str, Span]
) -> None:
    body = client.get(f"{BASE}/{tid(shop['slow'])}", **viewer).json()
    assert (body["span_count"], body["error_count"], body["duration_us"]) == (2, 1, 900_000)
    root, child = body["spans"]
    assert root["parent_span_id"] is None and child["parent_span_id"] == root["span_id"]
    assert (root["depth"], child["depth"]) == (0, 1)
    assert (child["duration_us"], child["status"]) == (700_000, "ERROR")
    assert root["self_us"] == 200_000
    assert child["attributes"] == {"db.table": "orders"}
    assert child["events"][0]["name"] == "retry"
    assert child["links"] == [] and root["links"] == []
    # the child runs from 0.1 s to 0.8 s of a 0.9 s root: both are on the critical path
    assert root["on_critical_path"] and child["on_critical_path"]


def test_trace_id_is_case_insensitive(
    client: Client, viewer: dict[str, str], shop: dict[str, Span]
) -> None:
    response = client.get(f"{BASE}/{tid(shop['fast']).upper()}", **viewer)
    assert response.json()["trace_id"] == tid(shop["fast"])


def test_unknown_trace_is_404(client: Client, viewer: dict[str, str]) -> None:
    assert client.get(f"{BASE}/{'ab' * 16}", **viewer).status_code == 404


@pytest.mark.parametrize("bad", ["xyz", "g" * 32, "a" * 31, "a" * 33])
def test_malformed_trace_id_is_422_naming_it(
    client: Client, viewer: dict[str, str], bad: str
) -> None:
    response = client.get(f"{BASE}/{bad}", **viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "trace_id"]


def test_traces_need_auth_and_permission(client: Client) -> None:
    assert client.get(BASE).status_code == 401
    nobody = testing.bearer(testing.token_for(testing.make_user("nobody")))
    assert client.get(f"{BASE}/{'ab' * 16}", **nobody).status_code == 403
