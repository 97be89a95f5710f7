"""The trace browser: search page (filters, sorting, paging, chart) and trace page."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from dashboard.traces import search as trace_search
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.masking import Masker
from dashboard.traces.services import write_spans

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_request_spans")]


class Builder:
    """Spans with chosen times (seconds before now) for any number of services."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.tracers: dict[str, trace.Tracer] = {}
        self.now_ns = time.time_ns()

    def tracer(self, service: str) -> trace.Tracer:
        if service not in self.tracers:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service}), shutdown_on_exit=False
            )
            provider.add_span_processor(SimpleSpanProcessor(self.memory))
            self.tracers[service] = provider.get_tracer("test")
        return self.tracers[service]

    def span(
        self,
        name: str,
        *,
        ago: float,
        ms: float,
        service: str = "shop",
        parent: Span | None = None,
        error: bool = False,
        attributes: dict[str, Any] | None = None,
        end: bool = True,
    ) -> Span:
        start = self.now_ns - int(ago * 1e9)
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer(service).start_span(
            name, context=context, start_time=start, attributes=attributes
        )
        if error:
            try:
                raise RuntimeError(f"{name} failed")
            except RuntimeError as exc:
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, "boom"))
        if end:
            span.end(end_time=start + int(ms * 1e6))
        return span

    def save(self) -> None:
        write_spans(self.memory.get_finished_spans(), masker=Masker(DEFAULT_MASKED_KEYS))
        self.memory.clear()


def tid(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def sid(span: Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


@pytest.fixture
def viewer(client: Client) -> Client:
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


@pytest.fixture
def shop() -> dict[str, Span]:
    """Three traces: a slow one with an error, a fast one, a wide one from two services."""
    b = Builder()
    slow = b.span("GET /orders", ago=30, ms=900, attributes={"http.status_code": 500}, end=False)
    b.span("db.query", ago=29.9, ms=700, parent=slow, error=True, attributes={"db.table": "orders"})
    slow.end(end_time=b.now_ns - int(30e9) + int(900e6))
    fast = b.span("GET /health", ago=20, ms=5, attributes={"http.status_code": 200})
    wide = b.span("POST /pay", ago=10, ms=300, end=False, attributes={"user.id": "u-7"})
    for i in range(4):
        b.span(f"charge {i}", ago=10 - i * 0.05, ms=40, parent=wide, service="payments")
    wide.end(end_time=b.now_ns - int(10e9) + int(300e6))
    b.save()
    return {"slow": slow, "fast": fast, "wide": wide}


def listed(response: Any) -> list[str]:
    return re.findall(r'<tr data-trace="([0-9a-f]{32})"', response.content.decode())


def search(client: Client, **params: Any) -> Any:
    response = client.get(reverse("traces:search"), params)
    assert response.status_code == 200
    return response


# ---- access ---------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_login(client: Client, shop: dict[str, Span]) -> None:
    for url in (
        reverse("traces:search"),
        reverse("traces:trace", args=[tid(shop["slow"])]),
        reverse("traces:span", args=[tid(shop["slow"]), sid(shop["slow"])]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_logged_in_user_without_the_view_permission_gets_403(
    client: Client, shop: dict[str, Span]
) -> None:
    client.force_login(User.objects.create_user("nobody"))
    assert client.get(reverse("traces:search")).status_code == 403
    assert client.get(reverse("traces:trace", args=[tid(shop["slow"])])).status_code == 403


def test_superuser_and_permitted_user_can_browse(
    client: Client, viewer: Client, shop: dict[str, Span]
) -> None:
    assert viewer.get(reverse("traces:search")).status_code == 200
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password=None))
    assert admin.get(reverse("traces:trace", args=[tid(shop["wide"])])).status_code == 200


# ---- search ---------------------------------------------------------------------------


def test_search_lists_one_row_per_trace_newest_first_with_counts(
    viewer: Client, shop: dict[str, Span]
) -> None:
    response = search(viewer)
    assert listed(response) == [tid(shop["wide"]), tid(shop["fast"]), tid(shop["slow"])]
    body = response.content.decode()
    row = body[body.index(f'data-trace="{tid(shop["slow"])}"') :]
    row = row[: row.index("</tr>")]
    cells = [re.sub(r"<[^>]+>", "", c.split(">", 1)[1]).strip() for c in row.split("<td")[1:]]
    assert cells[0].startswith("GET /orders") and cells[1] == "shop"
    assert cells[3:] == ["900ms", "2", "1"]
    assert 'class="has-errors"' in row


@pytest.fixture(params=["collected", "exists"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways span-level filters run: ids collected in memory, or correlated EXISTS."""
    if request.param == "exists":
        monkeypatch.setattr(trace_search, "SELECTIVE_SPANS", 0)
    return str(request.param)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("longest", ["slow", "wide", "fast"]),
        ("spans", ["wide", "slow", "fast"]),
        ("errors", ["slow", "wide", "fast"]),
        ("recent", ["wide", "fast", "slow"]),
    ],
)
def test_search_sorts(
    viewer: Client, shop: dict[str, Span], sort: str, expected: list[str]
) -> None:
    assert listed(search(viewer, sort=sort)) == [tid(shop[k]) for k in expected]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "payments"}, ["wide"]),  # any span of the trace, not only the root
        ({"name": "db.query"}, ["slow"]),
        ({"errors_only": "on"}, ["slow"]),
        ({"min_duration": "250ms"}, ["wide", "slow"]),
        ({"max_duration": "0.3s"}, ["wide", "fast"]),
        ({"min_duration": "100", "max_duration": "500"}, ["wide"]),  # bare numbers are ms
        ({"attr": "http.status_code=500"}, ["slow"]),  # typed int attribute
        ({"attr": "user.id=u-7"}, ["wide"]),
        ({"attr": "db.table=orders", "name": "db.query"}, ["slow"]),
        ({"attr": "db.table=users"}, []),
        ({"service": "payments", "errors_only": "on"}, []),
    ],
)
def test_search_filters(
    viewer: Client, shop: dict[str, Span], plan: str, params: dict[str, str], expected: list[str]
) -> None:
    response = search(viewer, **params)
    assert listed(response) == [tid(shop[k]) for k in expected]
    if not expected:
        assert "No trace matches these filters." in response.content.decode()


@pytest.fixture
def calls() -> dict[str, Span]:
    """payments called by shop, by billing, and by itself; shop calling only itself."""
    b = Builder()
    from_shop = b.span("POST /pay", ago=30, ms=100, service="shop", end=False)
    b.span("charge", ago=29.9, ms=50, parent=from_shop, service="payments")
    from_shop.end(end_time=b.now_ns - int(30e9) + int(100e6))
    from_billing = b.span("invoice", ago=20, ms=100, service="billing", end=False)
    charge = b.span("charge", ago=19.9, ms=50, parent=from_billing, service="payments", end=False)
    b.span("retry", ago=19.8, ms=10, parent=charge, service="payments")  # payments -> payments
    charge.end(end_time=b.now_ns - int(19.9e9) + int(50e6))
    from_billing.end(end_time=b.now_ns - int(20e9) + int(100e6))
    local = b.span("GET /cart", ago=10, ms=20, service="shop", end=False)
    b.span("render", ago=9.9, ms=5, parent=local, service="shop")
    local.end(end_time=b.now_ns - int(10e9) + int(20e6))
    b.save()
    return {"shop": from_shop, "billing": from_billing, "local": local}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"service": "payments", "caller": "shop"}, ["shop"]),
        ({"service": "payments", "caller": "billing"}, ["billing"]),
        ({"service": "payments"}, ["billing", "shop"]),
        # A call within one service is no edge: payments -> payments matches nothing.
        ({"service": "payments", "caller": "payments"}, []),
        ({"caller": "shop"}, ["shop"]),  # shop -> shop (GET /cart) is not a call
        ({"service": "shop", "caller": "billing"}, []),
        ({"service": "payments", "caller": "shop", "name": "charge"}, ["shop"]),
        ({"service": "payments", "caller": "nobody"}, []),
    ],
)
def test_search_filters_on_the_calling_service(
    viewer: Client, calls: dict[str, Span], plan: str, params: dict[str, str], expected: list[str]
) -> None:
    assert listed(search(viewer, **params)) == [tid(calls[k]) for k in expected]


def test_the_called_by_filter_is_kept_in_the_form(viewer: Client) -> None:
    html = search(viewer, service="payments", caller="sh<op").content.decode()
    assert 'name="caller" value="sh&lt;op"' in html


def test_attribute_values_match_by_type_and_exact_text(viewer: Client, plan: str) -> None:
    b = Builder()
    quoted = b.span("a", ago=5, ms=1, attributes={"note": 'say "hi"', "code": "007"})
    flags = b.span("b", ago=4, ms=1, attributes={"cached": True, "ratio": 0.5, "code": 7})
    b.save()
    assert listed(search(viewer, attr='note=say "hi"')) == [tid(quoted)]
    assert listed(search(viewer, attr="code=007")) == [tid(quoted)]
    assert listed(search(viewer, attr="code=7")) == [tid(flags)]
    assert listed(search(viewer, attr="cached=true")) == [tid(flags)]
    assert listed(search(viewer, attr="ratio=0.5")) == [tid(flags)]
    assert listed(search(viewer, attr="note=say")) == []


def test_time_range_filters_by_lookback_and_custom_range(viewer: Client) -> None:
    b = Builder()
    old = b.span("old", ago=3 * 3600, ms=10)
    new = b.span("new", ago=60, ms=10)
    b.save()
    assert listed(search(viewer)) == [tid(new)]  # default: last hour
    assert listed(search(viewer, lookback="all")) == [tid(new), tid(old)]
    assert listed(search(viewer, lookback="5m")) == [tid(new)]
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 4 * 3600))
    end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 2 * 3600))
    assert listed(search(viewer, start=start, end=end)) == [tid(old)]


def test_search_paginates_with_previous_and_next_links(viewer: Client) -> None:
    b = Builder()
    spans = [b.span(f"job {i}", ago=600 - i, ms=1) for i in range(55)]
    b.save()
    first = search(viewer, service="shop")
    assert listed(first) == [tid(s) for s in reversed(spans[5:])]
    body = first.content.decode()
    assert 'rel="next"' in body and 'rel="prev"' not in body
    assert "Traces 1–50 of 55 · page 1" in body
    second = search(viewer, service="shop", page=2)
    assert listed(second) == [tid(s) for s in reversed(spans[:5])]
    assert 'rel="prev"' in second.content.decode() and 'rel="next"' not in second.content.decode()
    assert "service=shop" in re.search(r'href="([^"]+)" rel="prev"', second.content.decode())[1]


def test_bad_filter_values_show_messages_not_errors(viewer: Client, shop: dict[str, Span]) -> None:
    response = search(
        viewer,
        min_duration="fast",
        max_duration="2 fortnights",
        attr="novalue",
        start="yesterday",
        page="0",
        sort="weird",
        lookback="forever",
    )
    body = response.content.decode()
    assert "Some filters are not valid" in body
    for field in ("Min duration", "Max duration", "Attribute", "From", "Page", "Sort"):
        assert f"<strong>{field}</strong>" in body
    assert "is not a duration" in body and "key=value" in body
    assert listed(response) == []


def test_inverted_ranges_are_reported(viewer: Client) -> None:
    body = search(
        viewer,
        min_duration="2s",
        max_duration="1s",
        start="2030-01-02T00:00",
        end="2030-01-01T00:00",
    ).content.decode()
    assert "the maximum duration is below the minimum" in body
    assert "the end of the time range is before its start" in body


def test_scatter_chart_plots_matching_traces_linked_and_errors_marked(
    viewer: Client, shop: dict[str, Span]
) -> None:
    body = search(viewer).content.decode()
    svg = body[body.index("<svg") : body.index("</svg>")]
    links = re.findall(r'<a href="/traces/([0-9a-f]{32})/"><circle class="([^"]+)"', svg)
    assert sorted(links) == sorted(
        [(tid(shop["slow"]), "pt pt-error"), (tid(shop["wide"]), "pt"), (tid(shop["fast"]), "pt")]
    )
    assert "<title>GET /orders · 900ms" in svg


def test_admin_lists_spans_read_only_with_a_link_to_the_trace(
    client: Client, shop: dict[str, Span]
) -> None:
    client.force_login(User.objects.create_superuser("root", password=None))
    body = client.get(reverse("admin:traces_spanrecord_changelist")).content.decode()
    assert "GET /orders" in body
    assert f'href="/traces/{tid(shop["slow"])}/?span={sid(shop["slow"])}"' in body
    assert client.get(reverse("admin:traces_spanrecord_add")).status_code == 403


def test_search_page_offers_known_services_and_names(viewer: Client, shop: dict[str, Span]) -> None:
    body = search(viewer).content.decode()
    services = body[body.index('id="trace-services"') : body.index("</datalist>")]
    assert re.findall(r'<option value="([^"]+)">', services) == ["payments", "shop"]
    assert '<option value="db.query">' in body


def test_user_text_is_escaped(viewer: Client) -> None:
    b = Builder()
    span = b.span("<script>alert(1)</script>", ago=5, ms=1, attributes={"x": "<b>bold</b>"})
    b.save()
    assert "<script>alert(1)" not in search(viewer).content.decode()
    page = viewer.get(reverse("traces:trace", args=[tid(span)])).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


# ---- one trace ------------------------------------------------------------------------


@pytest.fixture
def nested() -> dict[str, Span]:
    b = Builder()
    root = b.span("handle", ago=10, ms=100, end=False)
    a = b.span("step a", ago=10 - 0.010, ms=50, parent=root, end=False)
    a1 = b.span("step a.1", ago=10 - 0.020, ms=20, parent=a, error=True)
    a.end(end_time=b.now_ns - int(10e9) + int(60e6))
    bb = b.span("step b", ago=10 - 0.070, ms=20, parent=root)
    again = b.span("step b", ago=10 - 0.090, ms=5, parent=root)
    root.end(end_time=b.now_ns - int(10e9) + int(100e6))
    b.save()
    return {"root": root, "a": a, "a1": a1, "b": bb, "again": again}


def rows(body: str) -> list[tuple[str, int, str]]:
    found = re.findall(
        r'<(?:summary|div) class="(wf-row[^"]*)" data-span="([0-9a-f]{16})" data-depth="(\d+)"',
        body,
    )
    return [(span, int(depth), "error" if "wf-error" in css else "") for css, span, depth in found]


def test_trace_page_nests_spans_depth_first_and_highlights_errors(
    viewer: Client, nested: dict[str, Span]
) -> None:
    response = viewer.get(reverse("traces:trace", args=[tid(nested["root"])]))
    assert response.status_code == 200
    body = response.content.decode()
    assert rows(body) == [
        (sid(nested["root"]), 0, ""),
        (sid(nested["a"]), 1, ""),
        (sid(nested["a1"]), 2, "error"),
        (sid(nested["b"]), 1, ""),
        (sid(nested["again"]), 1, ""),
    ]
    # Parents with children are collapsible <details>; all of them are closed again.
    assert body.count('<details open class="wf-node">') == 2 == body.count("</details>") - 1
    assert "5 spans" in body and "1 error" in body


def test_waterfall_bars_are_placed_by_time(viewer: Client, nested: dict[str, Span]) -> None:
    body = viewer.get(reverse("traces:trace", args=[tid(nested["root"])])).content.decode()
    bars = re.findall(r'class="wf-bar" style="left:([\d.]+)%;width:([\d.]+)%"', body)
    assert bars[0] == ("0.000", "100.000")
    assert bars[1] == ("10.000", "50.000")  # step a: +10 ms, 50 ms of 100
    assert bars[2] == ("20.000", "20.000")


def test_trace_page_statistics_per_span_name_with_self_time(
    viewer: Client, nested: dict[str, Span]
) -> None:
    body = viewer.get(reverse("traces:trace", args=[tid(nested["root"])])).content.decode()
    table = body[body.index('class="grid span-stats"') :]

    def stat(name: str) -> list[str]:
        row = table[table.index(f'<tr data-name="{name}">') :]
        row = row[: row.index("</tr>")]
        return re.findall(r"<td[^>]*>([^<]*)</td>", row)

    # handle: 100 ms, children cover 10–60, 70–90 and 90–95 → self 100 - 75 = 25 ms
    assert stat("handle")[2:] == ["1", "100ms", "25ms", "100ms", "100ms", "0"]
    assert stat("step a")[2:5] == ["1", "50ms", "30ms"]
    assert stat("step b")[2:] == ["2", "25ms", "25ms", "12.5ms", "20ms", "0"]
    assert stat("step a.1")[-1] == "1"


def test_detail_panel_shows_the_first_error_with_its_stack_trace(
    viewer: Client, nested: dict[str, Span]
) -> None:
    body = viewer.get(reverse("traces:trace", args=[tid(nested["root"])])).content.decode()
    panel = body[body.index('id="span-panel"') :]
    assert f'data-span-detail="{sid(nested["a1"])}"' in panel
    assert '<strong class="exc-type">RuntimeError</strong>' in panel
    assert "step a.1 failed" in panel
    assert "Traceback (most recent call last)" in panel and "raise RuntimeError" in panel


def test_span_query_parameter_and_partial_select_another_span(
    viewer: Client, nested: dict[str, Span], shop: dict[str, Span]
) -> None:
    trace_url = reverse("traces:trace", args=[tid(shop["slow"])])
    body = viewer.get(trace_url, {"span": sid(shop["slow"])}).content.decode()
    panel = body[body.index('id="span-panel"') :]
    assert f'data-span-detail="{sid(shop["slow"])}"' in panel
    assert "<th>http.status_code</th><td>500</td>" in panel
    partial = viewer.get(reverse("traces:span", args=[tid(shop["slow"]), sid(shop["slow"])]))
    assert partial.status_code == 200 and b"<html" not in partial.content
    assert b"GET /orders" in partial.content
    elsewhere = reverse("traces:span", args=[tid(nested["root"]), sid(shop["slow"])])
    assert viewer.get(elsewhere).status_code == 404


@pytest.mark.parametrize(
    "trace_id",
    ["nothex", "0" * 32, "0" * 31, "0" * 33, "g" * 32, "0123456789abcdef0123456789abcdef"],
)
def test_invalid_or_unknown_trace_ids_are_404(viewer: Client, trace_id: str) -> None:
    response = viewer.get(reverse("traces:trace", args=[trace_id]))
    assert response.status_code == 404
    assert b"Trace not found" in response.content


def test_an_upper_case_trace_id_redirects_to_the_canonical_page(
    viewer: Client, shop: dict[str, Span]
) -> None:
    trace_id = tid(shop["slow"])
    response = viewer.get(reverse("traces:trace", args=[trace_id.upper()]))
    assert response.status_code == 302
    assert response["Location"] == reverse("traces:trace", args=[trace_id])
    kept = viewer.get(reverse("traces:trace", args=[trace_id.upper()]), {"span": sid(shop["slow"])})
    assert (
        kept["Location"] == reverse("traces:trace", args=[trace_id]) + f"?span={sid(shop['slow'])}"
    )


def test_invalid_span_id_in_partial_is_404(viewer: Client, shop: dict[str, Span]) -> None:
    url = reverse("traces:span", args=[tid(shop["slow"]), "XYZ"])
    assert viewer.get(url).status_code == 404
