"""The "called by" filter (a service map edge ``caller -> service``) against a plain
reading of the same rows: parents in the same trace only, missing parents, parents in
another trace, parents of the span's own service, time bounds, both plans, pages."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.traces import search, span_filters
from dashboard.traces.convert import to_datetime, to_us
from dashboard.traces.models import SpanRecord, SpanStatus, TraceSummary
from dashboard.traces.selectors import TraceQuery, search_traces
from tests.dashboard.traces.test_selectors import index_attributes

pytestmark = pytest.mark.django_db

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = int(EPOCH.timestamp() * 1_000_000)
SERVICES = "abc"


@pytest.fixture
def spans() -> list[SpanRecord]:
    """60 traces of 1-6 spans whose parents are: none, an earlier span of the same
    trace (of any service, the span's own included), a span of another trace, or an id
    no stored span has."""
    rng = random.Random(11)
    stored: list[SpanRecord] = []
    for i in range(60):
        trace_id = f"{i:032x}"
        start_us = T0_US + i * 1_000 + rng.randrange(900)
        duration = rng.randrange(1, 10_000) * 100 + i  # distinct
        records = []
        for j in range(rng.randint(1, 6)):
            choice = rng.random()
            if j == 0 or choice < 0.1:
                parent = None
            elif choice < 0.7:
                parent = records[rng.randrange(j)].span_id
            elif choice < 0.85 and stored:
                parent = rng.choice(stored).span_id  # another trace's span
            else:
                parent = f"{rng.getrandbits(60):016x}"  # missing
            start = to_datetime(start_us + rng.randrange(duration // 2 + 1) * (j > 0))
            records.append(
                SpanRecord(
                    trace_id=trace_id,
                    span_id=f"{i * 10 + j:016x}",
                    parent_span_id=parent,
                    name=rng.choice("xy"),
                    service=rng.choice(SERVICES),
                    start=start,
                    end=start + timedelta(microseconds=1),
                    duration_us=1,
                    status=SpanStatus.ERROR if rng.random() < 0.2 else SpanStatus.UNSET,
                    attributes={"k": rng.choice([1, 2])},
                )
            )
        SpanRecord.objects.bulk_create(records)
        stored.extend(records)
        TraceSummary.objects.create(
            trace_id=trace_id,
            root_name="root",
            root_service=records[0].service,
            root_rank=0,
            start_us=start_us,
            end_us=start_us + duration,
            duration_us=duration,
            span_count=len(records),
            error_count=sum(r.status == SpanStatus.ERROR for r in records),
        )
    stored = list(SpanRecord.objects.all())
    index_attributes(stored)
    return stored


def reference(stored: list[SpanRecord], query: TraceQuery) -> list[str]:
    """Trace ids matching ``query``, read span by span from the stored rows."""
    by_id = {(s.trace_id, s.span_id): s for s in stored}
    summaries = {t.trace_id: t for t in TraceSummary.objects.all()}

    def called(span: SpanRecord) -> bool:
        parent = by_id.get((span.trace_id, span.parent_span_id or ""))
        return (
            parent is not None
            and parent.service == query.caller
            and span.service != query.caller
            and (not query.service or span.service == query.service)
            and (not query.name or span.name == query.name)
            and (query.attribute is None or str(span.attributes["k"]) == query.attribute[1])
            and (query.since is None or span.start >= query.since)
            and (query.until is None or span.start <= query.until)
        )

    found = [
        summaries[trace_id]
        for trace_id in dict.fromkeys(s.trace_id for s in stored if called(s))
        if not query.errors_only or summaries[trace_id].error_count > 0
    ]
    # The time bounds hold for the trace's start too.
    if query.since is not None:
        found = [t for t in found if t.start_us >= to_us(query.since)]
    if query.until is not None:
        found = [t for t in found if t.start_us <= to_us(query.until)]
    keys = {
        "recent": lambda t: (t.start_us, t.trace_id),
        "longest": lambda t: (t.duration_us, t.trace_id),
        "spans": lambda t: (t.span_count, t.start_us),
        "errors": lambda t: (t.error_count, t.start_us),
    }
    found.sort(key=keys[query.sort], reverse=True)
    return [t.trace_id for t in found]


MIDDLE = to_datetime(T0_US + 20_000)
LATE = to_datetime(T0_US + 45_000)
FILTERS: list[dict[str, Any]] = [
    {"caller": "a"},
    {"caller": "b", "service": "c"},
    {"caller": "a", "service": "a"},  # a span is never called by its own service
    {"caller": "c", "name": "x"},
    {"caller": "a", "service": "b", "name": "y", "errors_only": True},
    {"caller": "b", "attribute": ("k", "1")},
    {"caller": "a", "since": MIDDLE},
    {"caller": "c", "service": "a", "since": MIDDLE, "until": LATE},
    {"caller": "nobody"},
]


@pytest.mark.parametrize("plan", ["collect", "collect-among", "walk"])
@pytest.mark.parametrize("sort", ["recent", "longest", "errors"])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f"{k}" for k in f))
def test_called_by_matches_a_plain_reading_of_the_spans(
    spans: list[SpanRecord],
    monkeypatch: pytest.MonkeyPatch,
    plan: str,
    sort: str,
    filters: dict[str, Any],
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 5)
    if plan == "walk":
        monkeypatch.setattr(span_filters, "CALLER_CANDIDATES", 0)
    elif plan == "collect-among":
        monkeypatch.setattr(search, "FEW_TRACES", 0)
    every = reference(spans, TraceQuery(sort=sort, **filters))
    per_page = 3
    for page in range(1, len(every) // per_page + 3):
        query = TraceQuery(sort=sort, page=page, per_page=per_page, **filters)
        found = search_traces(query=query, chart_limit=4)
        offset = (page - 1) * per_page
        assert [r.trace_id for r in found.page.rows] == every[offset : offset + per_page]
        assert found.page.has_next == (len(every) > offset + per_page)
        assert [p.trace_id for p in found.points] == reference(spans, TraceQuery(**filters))[:4]
        if not found.page.has_next and (found.page.rows or page == 1):
            assert (found.page.total, found.page.total_capped) == (len(every), False)
        else:
            cap = max(5, offset + per_page + 1)
            assert found.page.total == min(len(every), cap)


def test_the_fixture_holds_every_kind_of_parent(spans: list[SpanRecord]) -> None:
    """The cases the filter must tell apart are really in the data."""
    ids = {(s.trace_id, s.span_id): s for s in spans}
    own = {s.span_id for s in spans}
    kinds = set()
    for span in spans:
        parent = ids.get((span.trace_id, span.parent_span_id or ""))
        if span.parent_span_id is None:
            kinds.add("root")
        elif parent is not None:
            kinds.add("same service" if parent.service == span.service else "other service")
        elif span.parent_span_id in own:
            kinds.add("another trace")
        else:
            kinds.add("missing")
    assert kinds == {"root", "same service", "other service", "another trace", "missing"}
    assert reference(spans, TraceQuery(caller="a"))  # and some edges match
    assert to_us(MIDDLE) > min(to_us(s.start) for s in spans)
