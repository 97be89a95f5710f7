"""Review findings on trace search planning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models.query import ValuesListIterable

from dashboard.traces import search
from dashboard.traces.models import TraceSummary
from dashboard.traces.search import TraceQuery, search_traces

pytestmark = pytest.mark.django_db

T0_US = 1_800_000_000 * 1_000_000
COUNT = 300


@pytest.fixture
def traces() -> None:
    TraceSummary.objects.bulk_create(
        TraceSummary(
            trace_id=f"{i + 1:032x}",
            root_name="op",
            root_service="svc",
            root_rank=0,
            start_us=T0_US + i,
            end_us=T0_US + i + 10,
            duration_us=10,
            span_count=1,
            error_count=0,
        )  # fmt: skip
        for i in range(COUNT)
    )


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many summary rows each values_list query brought into Python."""
    sizes: list[int] = []
    original = ValuesListIterable.__iter__

    def counting(self: Any) -> Iterator[Any]:
        rows = list(original(self))
        if self.queryset.model is TraceSummary:
            sizes.append(len(rows))
        return iter(rows)

    monkeypatch.setattr(ValuesListIterable, "__iter__", counting)
    return sizes


def test_a_deep_recent_page_does_not_read_every_match_before_it(
    traces: None, fetched: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``?page=100000&page_size=500`` (the API's and the form's limits) must not bring up
    to 50 million summaries into the server's memory, as the OFFSET query and the
    database-side capped count before it did not: only ``max(COUNT_CAP, chart_limit)``
    newest rows (+1) and the page (+1) are read into Python."""
    monkeypatch.setattr(search, "COUNT_CAP", 10)
    found = search_traces(query=TraceQuery(page=50, per_page=5), chart_limit=0)
    newest_first = [f"{i + 1:032x}" for i in reversed(range(COUNT))]
    assert [r.trace_id for r in found.page.rows] == newest_first[245:250]
    assert max(fetched) <= 5 + 1 + 10 + 1, fetched


def test_a_first_page_still_counts_every_match_and_charts_the_newest(traces: None) -> None:
    found = search_traces(query=TraceQuery(page=1, per_page=5), chart_limit=500)
    assert (found.page.total, found.page.total_capped) == (COUNT, False)
    assert len(found.points) == COUNT
    assert found.page.has_next


def test_a_page_just_past_the_window_is_found_in_the_same_walk(
    traces: None, fetched: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "COUNT_CAP", 10)
    found = search_traces(query=TraceQuery(page=3, per_page=5), chart_limit=0)
    newest_first = [f"{i + 1:032x}" for i in reversed(range(COUNT))]
    assert [r.trace_id for r in found.page.rows] == newest_first[10:15]
    assert len(fetched) == 1  # one query: rows and count from the same walk


def test_on_postgresql_the_search_runs_without_parallel_workers(
    traces: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10M spans the planner's parallel plans cost 45–90 ms of worker start-up on
    queries that stop after a page: the search's transaction turns them off."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    seen: list[str] = []
    real = search._search_traces

    def spy(query: TraceQuery, chart_limit: int) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SHOW max_parallel_workers_per_gather")
            seen.append(cursor.fetchone()[0])
        return real(query, chart_limit)

    monkeypatch.setattr(search, "_search_traces", spy)
    found = search_traces(query=TraceQuery(service="svc"), chart_limit=10)
    assert seen == ["0"]
    assert found.page.total == 0  # no spans: the search itself still ran
