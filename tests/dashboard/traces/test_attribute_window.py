"""An attribute search reads its newest matches in the order of the attribute index's
bound (``search._newest_by_bound``), stopping early: whatever the traces look like, the
result equals the one the summaries' own order gives.

The reference is the same search with the index bypassed (the spans' JSON, every
matching trace sorted by the database). Windows are made small (``COUNT_CAP``, the
chart's limit, no slack in the first round) so that a few traces need several rounds.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.traces import search
from dashboard.traces.convert import SpanRow, to_datetime
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanAttribute, SpanRecord, TraceSummary
from dashboard.traces.search import TraceQuery, TraceSearch, search_traces
from dashboard.traces.services import write_spans

pytestmark = pytest.mark.django_db

T0_US = 1_800_000_000 * 1_000_000
SECOND = 1_000_000

# (root start s, attribute span offset s or None: no match, error, root duration s)
traces = st.lists(
    st.tuples(
        st.integers(0, 6),  # few starts: ties in start_us
        st.none() | st.sampled_from([0, 0, 1, 3, 40, 200]),  # late attribute spans
        st.booleans(),
        st.integers(1, 300),
    ),
    min_size=1,
    max_size=40,
)
queries = st.builds(
    dict,
    page=st.integers(1, 6),
    per_page=st.sampled_from([1, 2, 5]),
    sort=st.sampled_from(["recent", "recent", "longest", "spans"]),
    errors_only=st.booleans(),
    min_duration_us=st.none() | st.just(100 * SECOND),
    since=st.none() | st.integers(0, 5),
    until=st.none() | st.integers(1, 250),
)


def _store(specs: list[tuple[int, int | None, bool, int]]) -> None:
    SpanAttribute.objects.all().delete()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    rows = []
    for i, (start_s, offset, error, duration_s) in enumerate(specs):
        trace, start = f"{i + 1:032x}", T0_US + start_s * SECOND
        end = start + duration_s * SECOND
        root = {"k": "v"} if offset == 0 else {}
        rows.append(
            SpanRow(trace, f"{1:016x}", None, "root", "svc", "SERVER", start, end,
                    "ERROR" if error else "UNSET", "", root, [], {})
        )  # fmt: skip
        if offset:
            child = start + offset * SECOND
            rows.append(
                SpanRow(trace, f"{2:016x}", f"{1:016x}", "child", "svc", "INTERNAL", child,
                        child + 1, "UNSET", "", {"k": "v"}, [], {})
            )  # fmt: skip
    write_spans(rows, masker=Masker(()))


def _recent(page: int, per_page: int) -> dict[str, Any]:
    return {"page": page, "per_page": per_page, "sort": "recent", "errors_only": False,
            "min_duration_us": None, "since": None, "until": None}  # fmt: skip


def _query(params: dict[str, Any]) -> TraceQuery:
    bounds = {
        name: to_datetime(T0_US + params[name] * SECOND)
        for name in ("since", "until")
        if params[name] is not None
    }
    return TraceQuery(attribute=("k", "v"), **{**params, **bounds})


def both_searches(
    query: TraceQuery, monkeypatch: pytest.MonkeyPatch, chart_limit: int = 2
) -> tuple[TraceSearch, TraceSearch]:
    """The search as it runs, and the same through the spans' JSON (no attribute index)."""
    found = search_traces(query=query, chart_limit=chart_limit)
    with monkeypatch.context() as patched:
        patched.setattr(search, "indexed_attribute", lambda *args: None)
        reference = search_traces(query=query, chart_limit=chart_limit)
    return found, reference


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=traces, params=st.lists(queries, min_size=1, max_size=4))
def test_the_early_stop_gives_what_sorting_every_match_gives(
    monkeypatch: pytest.MonkeyPatch,
    specs: list[tuple[int, int | None, bool, int]],
    params: list[dict[str, Any]],
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    _store(specs)
    for param in params:
        found, reference = both_searches(_query(param), monkeypatch)
        assert found == reference, param


def test_a_trace_whose_attribute_span_starts_late_is_not_taken_for_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trace 1 is the oldest but its attribute span is the latest of all: it comes first
    by bound, and the walk must go on until the bound drops below the window's oldest."""
    monkeypatch.setattr(search, "COUNT_CAP", 1)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    specs: list[tuple[int, int | None, bool, int]] = [(0, 200, False, 300)]
    specs += [(start, 0, False, 1) for start in (5, 5, 6, 4, 3, 2)]
    _store(specs)
    found, reference = both_searches(_query(_recent(1, 1)), monkeypatch)
    assert found == reference
    # newest first: start 6 (trace 4), then the tie at 5 by trace id descending
    assert [p.trace_id for p in found.points] == [f"{4:032x}", f"{3:032x}"]
    assert (found.page.total, found.page.total_capped) == (2, True)  # cap: max(1, end)
    every = [found]
    for page in range(2, 9):
        found, reference = both_searches(_query(_recent(page, 1)), monkeypatch)
        assert found == reference, page
        every.append(found)
    order = [row.trace_id for result in every for row in result.page.rows]
    assert order == [f"{i:032x}" for i in (4, 3, 2, 5, 6, 7, 1)]


def test_traces_tied_on_start_and_bound_beyond_the_first_round_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    _store([(0, 0, False, 1)] * 10)
    found, reference = both_searches(_query(_recent(1, 2)), monkeypatch)
    assert found == reference
    assert [p.trace_id for p in found.points] == [f"{10:032x}", f"{9:032x}"]


def test_a_first_round_short_of_the_window_is_not_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The two highest bounds are traces started before ``since``: the first round
    finds one trace, and the next bound being below its start proves nothing."""
    monkeypatch.setattr(search, "COUNT_CAP", 1)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    _store(
        [(0, 200, False, 300), (0, 200, False, 300)] + [(s, 0, False, 1) for s in range(6, 1, -1)]
    )
    found, reference = both_searches(_query({**_recent(1, 5), "since": 1}), monkeypatch)
    assert found == reference
    assert [row.trace_id for row in found.page.rows] == [f"{i:032x}" for i in range(3, 8)]


def test_the_walk_reads_one_round_when_bounds_follow_the_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    _store([(start, 0, False, 1) for start in range(40)])
    with CaptureQueriesContext(connection) as queries:
        found = search_traces(query=_query(_recent(1, 2)), chart_limit=2)
    summaries = [q["sql"] for q in queries.captured_queries if "traces_tracesummary" in q["sql"]]
    assert len(summaries) == 1  # the window of 4 from the first 4 traces by bound
    assert len(found.points) == 2 and found.page.total_capped
