from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.api import testing, throttle
from dashboard.fleet.models import FleetInstance
from dashboard.servicemap import layout, selectors
from dashboard.servicemap.rollup import rollup
from dashboard.traces.models import SpanKind, TraceSummary
from resilience.circuit_breaker import circuit_breaker_registry
from tests.dashboard.servicemap.spans import make

pytestmark = pytest.mark.django_db

API = "/api/observability/service-map"
PAGE = "/service-map/"


@pytest.fixture(autouse=True)
def _no_throttle(settings: Any) -> Any:
    settings.API_RATE_LIMIT = ""
    throttle.reset()
    yield
    throttle.reset()


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(testing.make_user("vera", "dashboard.view_dashboard"))
    return client


def _calls(*, breaker: str = "", when: Any = None, errors: int = 1, count: int = 4) -> None:
    start = when or timezone.now() - timedelta(minutes=2)
    attributes = {"breaker": breaker} if breaker else {}
    client = make(service="gateway", kind=SpanKind.CLIENT, start=start, attributes=attributes)
    for i in range(count):
        make(service="orders", parent=client.span_id, start=start, error=i < errors,
             duration_us=1000 * (i + 1))  # fmt: skip


def test_anonymous_callers_are_sent_to_login_or_refused(client: Client) -> None:
    page = client.get(PAGE)
    assert page.status_code == 302 and "/accounts/login/" in page["Location"]
    assert client.get(API).status_code == 401


def test_users_without_the_view_permission_get_403(client: Client) -> None:
    client.force_login(testing.make_user("nobody"))
    assert client.get(PAGE).status_code == 403
    assert client.get(API).status_code == 403


def test_the_page_draws_each_edge_with_its_figures_and_a_link_to_its_traces(viewer: Client) -> None:
    _calls()
    page = viewer.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<svg class="service-map"' in html
    assert 'data-service="gateway"' in html and 'data-service="orders"' in html
    assert 'data-caller="gateway" data-callee="orders"' in html
    assert "25.0% err" in html
    assert "/traces/?service=orders&amp;caller=gateway&amp;lookback=15m" in html
    assert 'aria-current="page"' in html and "Service map</a>" in html


def test_the_polled_partial_is_the_map_alone(viewer: Client) -> None:
    _calls()
    partial = viewer.get(PAGE, {"partial": "1", "range": "1h"})
    html = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in html
    assert "lookback=1h" in html


def test_calls_outside_the_range_are_not_on_the_map(viewer: Client) -> None:
    _calls(when=timezone.now() - timedelta(minutes=30))
    assert "No calls between services" in viewer.get(PAGE).content.decode()
    assert 'data-callee="orders"' in viewer.get(PAGE, {"range": "1h"}).content.decode()


def test_a_bad_range_is_a_clear_error(viewer: Client) -> None:
    page = viewer.get(PAGE, {"range": "2d"})
    assert page.status_code == 400 and b"range must be one of" in page.content
    assert viewer.get(API, {"range": "2d"}).status_code == 422
    with pytest.raises(ValueError, match="range must be one of"):
        selectors.range_minutes("2d")


def test_a_local_breaker_shows_its_live_state_on_its_edge(viewer: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create("orders")
    _calls(breaker="orders")
    html = viewer.get(PAGE).content.decode()
    assert 'data-breaker="orders" data-state="closed"' in html
    breaker.force_open(actor="test", reason="drill")
    html = viewer.get(PAGE, {"partial": "1"}).content.decode()
    assert 'data-breaker="orders" data-state="forced_open"' in html


def test_the_callers_fleet_instances_give_the_breaker_state(viewer: Client) -> None:
    now = timezone.now()
    FleetInstance.objects.create(
        instance_id="i-1", service="gateway", host="h", pid=1, started_at=now, first_seen=now,
        last_seen=now, breakers=[{"name": "orders", "state": "closed"}],
    )  # fmt: skip
    FleetInstance.objects.create(
        instance_id="i-2", service="gateway", host="h", pid=2, started_at=now, first_seen=now,
        last_seen=now, breakers=[{"name": "orders", "state": "open"}],
    )  # fmt: skip
    _calls(breaker="orders")
    body = viewer.get(API).json()
    [edge] = body["edges"]
    assert edge["breakers"] == [{"name": "orders", "state": "open", "source": "fleet"}]


def test_a_breaker_nobody_reports_is_unknown(viewer: Client) -> None:
    _calls(breaker="elsewhere")
    [edge] = viewer.get(API).json()["edges"]
    assert edge["breakers"] == [{"name": "elsewhere", "state": "unknown", "source": ""}]


def test_the_api_answers_edges_with_rate_errors_and_p95(viewer: Client) -> None:
    _calls(count=4, errors=1)
    body = viewer.get(API, {"range": "5m"}).json()
    assert body["range"] == "5m" and body["caught_up"] is True
    assert body["services"] == ["gateway", "orders"]
    [edge] = body["edges"]
    assert (edge["caller"], edge["callee"], edge["calls"], edge["errors"]) == (
        "gateway",
        "orders",
        4,
        1,
    )
    assert edge["error_rate"] == 0.25
    assert 3.6 <= edge["p95_ms"] <= 4.4  # 4 ms, within its log bucket
    # 4 calls over the range: 5 minutes plus the part of the first minute it starts in.
    assert 4 / 360 <= edge["rate_per_s"] <= 4 / 300
    assert edge["trace_filter"] == {"service": "orders", "caller": "gateway", "lookback": "5m"}


def test_an_edges_link_finds_the_traces_of_that_callers_calls_only(viewer: Client) -> None:
    start = timezone.now() - timedelta(minutes=2)
    for trace, caller in (("a" * 32, "gateway"), ("b" * 32, "billing")):
        root = make(service=caller, trace=trace, start=start)
        make(service="orders", trace=trace, parent=root.span_id, start=start)
        start_us = int(start.timestamp() * 1e6)
        TraceSummary.objects.create(trace_id=trace, root_name=f"{caller} op",
                                    root_service=caller, root_rank=0, start_us=start_us,
                                    end_us=start_us + 1000, duration_us=1000, span_count=2,
                                    error_count=0)  # fmt: skip
    edges = {(e["caller"], e["callee"]): e for e in viewer.get(API).json()["edges"]}
    link = edges[("gateway", "orders")]["trace_filter"]
    html = viewer.get("/traces/", link).content.decode()
    assert 'data-trace="' + "a" * 32 + '"' in html
    assert "b" * 32 not in html


def test_a_peer_edge_links_to_the_callers_client_spans(viewer: Client) -> None:
    make(service="gateway", kind=SpanKind.CLIENT, start=timezone.now() - timedelta(minutes=1),
         attributes={"peer.service": "stripe"})  # fmt: skip
    [edge] = viewer.get(API).json()["edges"]
    assert edge["trace_filter"] == {
        "service": "gateway",
        "attr": "peer.service=stripe",
        "lookback": "15m",
    }


def test_the_page_catches_up_before_answering(viewer: Client) -> None:
    _calls()
    rollup()
    _calls(count=2, errors=0)  # stored after the last rollup
    [edge] = viewer.get(API).json()["edges"]
    assert edge["calls"] == 6


def test_layers_follow_the_calls_and_survive_cycles() -> None:
    layers = layout.layers(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")])
    assert layers["a"] == 0 and layers["b"] == 1 and layers["c"] == 2 and layers["d"] == 0


def test_every_service_gets_a_box_and_every_edge_a_line() -> None:
    found = selectors.Edge
    edges = [
        found("a", "b", 1, 0, 1.0, 0.0, 1.0, 1.0, (), {}),
        found("b", "a", 1, 0, 1.0, 0.0, 1.0, 1.0, (), {}),
    ]
    drawing = layout.draw(["a", "b"], edges)
    assert {n.name for n in drawing.nodes} == {"a", "b"}
    assert [line.backward for line in drawing.lines] == [False, True]
    assert all(n.x + n.w <= drawing.width and n.y + n.h <= drawing.height for n in drawing.nodes)


def test_hostile_service_names_are_escaped_in_the_svg_and_the_link(viewer: Client) -> None:
    start = timezone.now() - timedelta(minutes=1)
    root = make(service='<script>alert("x")</script>', start=start)
    make(service='a&b "q"', parent=root.span_id, start=start)
    html = viewer.get(PAGE).content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "service=a%26b+%22q%22" in html
