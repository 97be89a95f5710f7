"""search_traces against a brute-force reading of the same rows: every filter, sort,
page, both span-filter plans, and the count cap."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.traces import search, selectors
from dashboard.traces.attribute_index import attribute_rows
from dashboard.traces.convert import to_us
from dashboard.traces.models import SpanAttribute, SpanRecord, SpanStatus, TraceSummary
from dashboard.traces.selectors import TraceQuery, search_traces

pytestmark = pytest.mark.django_db

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = int(EPOCH.timestamp() * 1_000_000)


def index_attributes(records: list[SpanRecord]) -> None:
    """What the span writer adds for spans it stores (these are created by the ORM)."""
    rows = attribute_rows((r.trace_id, to_us(r.start), r.attributes) for r in records)
    for k, v, t, first, last in rows:
        row, created = SpanAttribute.objects.get_or_create(
            key=k, value=v, trace_id=t, defaults={"first_us": first, "last_us": last}
        )
        if not created:
            row.first_us, row.last_us = min(row.first_us, first), max(row.last_us, last)
            row.save()


@pytest.fixture
def store() -> list[dict[str, Any]]:
    """40 traces of 1-3 spans; returns each trace with what its spans carry."""
    rng = random.Random(5)
    traces = []
    for i in range(40):
        trace_id = f"{i:032x}"
        start_us = T0_US + i * 1_000 + rng.randrange(500)
        duration = rng.randrange(1, 10_000) * 10 + i  # distinct
        spans = []
        for _ in range(rng.randint(1, 3)):
            spans.append(
                {
                    "service": rng.choice("abc"),
                    "name": rng.choice("xy"),
                    "error": rng.random() < 0.2,
                    "k": rng.choice([1, "1", 2]),
                }
            )
        for j, span in enumerate(spans):
            start = EPOCH + timedelta(microseconds=start_us - T0_US)
            record = SpanRecord.objects.create(
                trace_id=trace_id,
                span_id=f"{j:016x}",
                name=span["name"],
                service=span["service"],
                start=start,
                end=start + timedelta(microseconds=duration),
                duration_us=duration,
                status=SpanStatus.ERROR if span["error"] else SpanStatus.UNSET,
                attributes={"k": span["k"]},
            )
            index_attributes([record])
        errors = sum(s["error"] for s in spans)
        TraceSummary.objects.create(
            trace_id=trace_id,
            root_name="root",
            root_service=spans[0]["service"],
            root_rank=0,
            start_us=start_us,
            end_us=start_us + duration,
            duration_us=duration,
            span_count=len(spans),
            error_count=errors,
        )
        traces.append(
            {
                "id": trace_id,
                "start": start_us,
                "duration": duration,
                "spans": len(spans),
                "errors": errors,
                "span_list": spans,
            }
        )
    return traces


def expected(traces: list[dict[str, Any]], query: TraceQuery) -> list[str]:
    def span_matches(span: dict[str, Any]) -> bool:
        return (
            (not query.service or span["service"] == query.service)
            and (not query.name or span["name"] == query.name)
            and (query.attribute is None or str(span["k"]) == query.attribute[1])
        )

    found = [
        t
        for t in traces
        if (not query.errors_only or t["errors"] > 0)
        and (query.min_duration_us is None or t["duration"] >= query.min_duration_us)
        and (
            not (query.service or query.name or query.attribute)
            or any(span_matches(s) for s in t["span_list"])
        )
    ]
    keys = {
        "recent": lambda t: (t["start"], t["id"]),
        "longest": lambda t: (t["duration"], t["id"]),
        "spans": lambda t: (t["spans"], t["start"]),
        "errors": lambda t: (t["errors"], t["start"]),
    }
    found.sort(key=keys[query.sort], reverse=True)
    return [t["id"] for t in found]


FILTERS: list[dict[str, Any]] = [
    {},
    {"errors_only": True},
    {"min_duration_us": 50_000},
    {"service": "a"},
    {"name": "x", "service": "b"},
    {"attribute": ("k", "1")},
    {"attribute": ("k", "2"), "errors_only": True},
]


@pytest.mark.parametrize("plan", ["by-key", "id-set", "exists"])
@pytest.mark.parametrize("sort", list(selectors.SORTS))
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_every_page_matches_a_brute_force_search(
    store: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    plan: str,
    sort: str,
    filters: dict[str, Any],
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 7)
    if plan == "id-set":
        monkeypatch.setattr(search, "FEW_TRACES", 0)
    elif plan == "exists":
        monkeypatch.setattr(search, "SELECTIVE_SPANS", 0)
    every = expected(store, TraceQuery(sort=sort, **filters))
    per_page = 4
    for page in range(1, len(every) // per_page + 3):
        query = TraceQuery(sort=sort, page=page, per_page=per_page, **filters)
        found = search_traces(query=query, chart_limit=5)
        offset = (page - 1) * per_page
        assert [r.trace_id for r in found.page.rows] == every[offset : offset + per_page]
        assert found.page.has_next == (len(every) > offset + per_page)
        newest = expected(store, TraceQuery(**filters))[:5]
        assert [p.trace_id for p in found.points] == newest
        cap = max(7, offset + per_page + 1)
        if not found.page.has_next and (found.page.rows or page == 1):
            assert (found.page.total, found.page.total_capped) == (len(every), False)
        else:
            assert found.page.total == min(len(every), cap)
            assert found.page.total_capped == (len(every) >= cap)


def test_distinct_values_are_sorted_and_limited(store: list[dict[str, Any]]) -> None:
    services = sorted({s["service"] for t in store for s in t["span_list"]})
    assert selectors.distinct_values(field_name="service") == services
    assert selectors.distinct_values(field_name="service", limit=2) == services[:2]
    assert selectors.distinct_values(field_name="name") == ["x", "y"]


@pytest.mark.django_db
def test_distinct_values_of_an_empty_store_and_a_bad_field() -> None:
    assert selectors.distinct_values(field_name="name") == []
    with pytest.raises(ValueError, match="field_name"):
        selectors.distinct_values(field_name="status")
