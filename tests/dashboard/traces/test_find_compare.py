"""Find a trace by id from the nav; compare two traces side by side; the critical path."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from opentelemetry.trace import Span

from dashboard.traces.compare import Change, compare
from dashboard.traces.convert import to_datetime
from dashboard.traces.models import SpanRecord
from dashboard.traces.views import normalize_trace_id
from dashboard.traces.waterfall import build_detail

from .test_views import Builder, sid, tid

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_request_spans")]

FIND = "/traces/find/"


@pytest.fixture
def viewer(client: Client) -> Client:
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


def _request(b: Builder, *, db_ms: float, extra: bool = False, cache: bool = True) -> Span:
    root = b.span("GET /orders", ago=10, ms=1_000, end=False)
    if cache:
        b.span("cache.get", ago=10, ms=10, parent=root)
    b.span("db.query", ago=9.9, ms=db_ms, parent=root, service="db")
    b.span("db.query", ago=9.5, ms=100, parent=root, service="db")
    if extra:
        b.span("retry", ago=9.3, ms=50, parent=root)
    root.end(end_time=b.now_ns - int(10e9) + int(1_000e6))
    return root


@pytest.fixture
def pair() -> tuple[Span, Span]:
    b = Builder()
    a = _request(b, db_ms=200)
    slow = _request(b, db_ms=400, extra=True, cache=False)
    b.save()
    return a, slow


# ---- find by id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319c"),
        (" 0AF7651916CD43DD8448EB211C80319C\n", "0af7651916cd43dd8448eb211c80319c"),
        ("8448eb211c80319c", "00000000000000008448eb211c80319c"),
        ("0" * 32, None),
        ("0" * 16, None),
        ("0af7651916cd43dd8448eb211c80319", None),
        ("0af7651916cd43dd8448eb211c80319cc", None),
        ("0af7651916cd43dd-8448eb211c80319c", None),
        ("g" * 32, None),
        ("", None),
        ("٠" * 32, None),  # Arabic-Indic zeros are digits to \d, not hex
    ],
)
def test_trace_ids_are_normalized_or_refused(text: str, expected: str | None) -> None:
    assert normalize_trace_id(text) == expected


def test_the_nav_box_on_every_page_goes_to_the_trace(
    viewer: Client, pair: tuple[Span, Span]
) -> None:
    home = viewer.get("/").content.decode()
    assert f'action="{FIND}"' in home and 'name="id"' in home
    trace_id = tid(pair[0])
    response = viewer.get(FIND, {"id": f" {trace_id.upper()} "})
    assert response.status_code == 302
    assert response["Location"] == reverse("traces:trace", args=[trace_id])


def test_a_zipkin_style_16_digit_id_finds_the_zero_padded_trace(viewer: Client) -> None:
    b = Builder()
    root = b.span("job", ago=1, ms=5)
    b.save()
    padded = "0" * 16 + "8448eb211c80319c"
    SpanRecord.objects.filter(trace_id=tid(root)).update(trace_id=padded)
    response = viewer.get(FIND, {"id": "8448EB211C80319C"})
    assert response["Location"] == reverse("traces:trace", args=[padded])


def test_an_unknown_id_is_a_404_page_saying_so(viewer: Client) -> None:
    response = viewer.get(FIND, {"id": "ab" * 16})
    assert response.status_code == 404
    html = response.content.decode()
    assert "Trace not found" in html and f"No spans are stored for trace {'ab' * 16}" in html


@pytest.mark.parametrize("text", ["", "nothex", "<script>alert(1)</script>", "x" * 10_000, "\0"])
def test_a_malformed_id_is_a_400_page_with_the_text_escaped(viewer: Client, text: str) -> None:
    response = viewer.get(FIND, {"id": text})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Trace not found" in html
    assert "<script>alert(1)</script>" not in html
    assert len(html) < 20_000  # the echoed query is cut


def test_find_needs_login_and_the_view_permission(client: Client) -> None:
    assert client.get(FIND, {"id": "ab" * 16}).status_code == 302
    client.force_login(User.objects.create_user("nobody"))
    assert client.get(FIND, {"id": "ab" * 16}).status_code == 403
    assert client.post(FIND, {"id": "ab" * 16}).status_code in (403, 405)


# ---- compare --------------------------------------------------------------------------------


def _compare(client: Client, a: str, **params: Any) -> Any:
    return client.get(reverse("traces:compare", args=[a]), params)


def test_compare_matches_spans_by_path_and_flags_differences(
    viewer: Client, pair: tuple[Span, Span]
) -> None:
    a, b = pair
    response = _compare(viewer, tid(a), **{"with": tid(b).upper()})
    assert response.status_code == 200
    html = response.content.decode()
    rows = re.findall(r'data-change="([a-z-]+)"><td class="cmp-name"[^>]*>([^<]*)<', html)
    assert rows == [
        ("same", "GET /orders"),
        ("only-a", "cache.get"),
        ("slower", "db.query"),  # the first db.query: 200 ms → 400 ms
        ("same", "db.query"),  # the second matches the second
        ("only-b", "retry"),
    ]
    assert "+200ms (+100%)" in html
    assert "1 missing in B" in html and "1 extra in B" in html


def test_the_threshold_decides_what_counts_as_slower(
    viewer: Client, pair: tuple[Span, Span]
) -> None:
    a, b = pair
    html = _compare(viewer, tid(a), threshold="150", **{"with": tid(b)}).content.decode()
    assert 'data-change="slower"' not in html
    response = _compare(viewer, tid(a), threshold="-5", **{"with": tid(b)})
    assert response.status_code == 400
    assert _compare(viewer, tid(a), threshold="nan", **{"with": tid(b)}).status_code == 400


def test_compare_without_an_other_id_shows_the_form(
    viewer: Client, pair: tuple[Span, Span]
) -> None:
    response = _compare(viewer, tid(pair[0]))
    assert response.status_code == 200
    assert b'name="with"' in response.content


def test_compare_with_a_bad_or_unknown_id_says_so(viewer: Client, pair: tuple[Span, Span]) -> None:
    bad = _compare(viewer, tid(pair[0]), **{"with": "<b>x</b>"})
    assert bad.status_code == 400 and b"not a trace id" in bad.content
    assert b"<b>x</b>" not in bad.content
    unknown = _compare(viewer, tid(pair[0]), **{"with": "ab" * 16})
    assert unknown.status_code == 404 and b"No spans are stored" in unknown.content
    assert _compare(viewer, "ab" * 16, **{"with": tid(pair[0])}).status_code == 404
    assert _compare(viewer, "nothex").status_code == 404


def test_the_trace_page_offers_compare_with(viewer: Client, pair: tuple[Span, Span]) -> None:
    html = viewer.get(reverse("traces:trace", args=[tid(pair[0])])).content.decode()
    assert f'action="{reverse("traces:compare", args=[tid(pair[0])])}"' in html
    assert 'name="with"' in html


def test_compare_needs_login_and_the_view_permission(
    client: Client, pair: tuple[Span, Span]
) -> None:
    url = reverse("traces:compare", args=[tid(pair[0])])
    assert client.get(url, {"with": tid(pair[1])}).status_code == 302
    client.force_login(User.objects.create_user("nobody"))
    assert client.get(url, {"with": tid(pair[1])}).status_code == 403


def _detail(*spans: tuple[str, str | None, str, int, int]) -> Any:
    rows = [
        (span_id, parent, name, "svc", "INTERNAL", to_datetime(start), duration, "UNSET", "")
        for span_id, parent, name, start, duration in spans
    ]
    return build_detail(trace_id="ab" * 16, found=sorted(rows, key=lambda r: r[5]))


def test_compare_unit_repeated_names_match_in_start_order_and_zero_durations() -> None:
    a = _detail(("r", None, "root", 0, 100), ("x1", "r", "x", 0, 0), ("x2", "r", "x", 10, 50))
    b = _detail(("R", None, "root", 0, 100), ("y1", "R", "x", 0, 5), ("y2", "R", "x", 10, 40))
    result = compare(a, b, threshold=0.1)
    assert [(r.name, r.change) for r in result.rows] == [
        ("root", Change.SAME),
        ("x", Change.SLOWER),  # 0 → 5 µs
        ("x", Change.FASTER),  # 50 → 40 µs: -20%
    ]
    root = result.rows[0]
    assert (root.a_bar, root.b_bar) == (("0.000", "100.000"), ("0.000", "100.000"))
    assert result.rows[2].b_bar == ("10.000", "40.000")  # on the scale of the longer trace
    with pytest.raises(ValueError, match="threshold"):
        compare(a, b, threshold=-1)


def test_compare_unit_children_of_unmatched_spans_are_unmatched_too() -> None:
    a = _detail(("r", None, "root", 0, 100), ("p", "r", "p", 0, 50), ("c", "p", "c", 0, 10))
    b = _detail(("r", None, "root", 0, 100), ("q", "r", "q", 0, 50), ("c", "q", "c", 0, 10))
    result = compare(a, b)
    assert [(r.name, r.depth, r.change) for r in result.rows] == [
        ("root", 0, Change.SAME),
        ("p", 1, Change.ONLY_A),
        ("c", 2, Change.ONLY_A),
        ("q", 1, Change.ONLY_B),
        ("c", 2, Change.ONLY_B),
    ]


def test_compare_unit_a_deep_trace_costs_memory_linear_in_its_spans() -> None:
    """Keys were whole root paths: a chain of 10,000 spans (what an ingest token can
    send, and the page's span limit) made ~50 million tuple entries, 1.2 GB and 26 s
    for one compare request."""
    import tracemalloc

    from dashboard.traces.waterfall import MAX_TRACE_SPANS

    chain = [
        (f"s{i}", f"s{i - 1}" if i else None, "op", i, MAX_TRACE_SPANS - i)
        for i in range(MAX_TRACE_SPANS)
    ]
    a, b = _detail(*chain), _detail(*chain)
    tracemalloc.start()
    try:
        result = compare(a, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.depth for r in result.rows] == list(range(MAX_TRACE_SPANS))
    assert {r.change for r in result.rows} == {Change.SAME}
    assert peak < 100 * 1024 * 1024  # linear: a few MB; quadratic: over a gigabyte


# ---- critical path in the waterfall ------------------------------------------------------------


def test_the_waterfall_marks_the_critical_path(viewer: Client) -> None:
    # "fast" and "slow" run in parallel: only the one that finishes last is on the path.
    b = Builder()
    root = b.span("batch", ago=10, ms=1_000, end=False)
    fast = b.span("fast", ago=9.9, ms=100, parent=root)
    slow = b.span("slow", ago=9.9, ms=800, parent=root)
    root.end(end_time=b.now_ns - int(10e9) + int(1_000e6))
    b.save()
    html = viewer.get(reverse("traces:trace", args=[tid(root)])).content.decode()
    on_path = set(re.findall(r'wf-on-path[^"]*" data-span="([0-9a-f]{16})"', html))
    assert on_path == {sid(root), sid(slow)}
    assert sid(fast) not in on_path
    assert html.count('class="wf-crit"') == 3  # root before, slow, root after
