"""Review of ``search._newest_by_bound``: states in which an index row's ``first_us``
is below its trace's summary ``start_us`` (the bound the early stop relies on)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from dashboard.traces import search, services
from dashboard.traces.convert import SpanRow, to_datetime
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanAttribute, TraceSummary
from dashboard.traces.search import TraceQuery, search_traces
from dashboard.traces.services import cleanup_spans, write_spans
from tests.dashboard.traces.test_attribute_window import both_searches

pytestmark = pytest.mark.django_db

T0_US = 1_800_000_000 * 1_000_000
SECOND = 1_000_000


def _span(trace: int, span: int, start_s: float, attrs: dict[str, Any]) -> SpanRow:
    start = T0_US + int(start_s * SECOND)
    return SpanRow(f"{trace:032x}", f"{span:016x}", None, "op", "svc", "SERVER", start,
                   start + SECOND, "UNSET", "", attrs, [], {})  # fmt: skip


def _write(*rows: SpanRow) -> None:
    write_spans(list(rows), masker=Masker(()))


def test_a_summary_deleted_by_retention_while_a_span_is_written_keeps_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention reads the ids of expired summaries, then deletes them by id: a span of
    one of those traces committed in between (here: a late child) loses its summary,
    and the next span of the trace creates a new one starting later than the index
    row's first start. The search must still find the trace where its summary sorts."""
    _write(_span(1, 1, 0, {}))  # trace 1: an old root
    for i in range(2, 6):  # traces 2-5: start at 100-103 s, after trace 1's new spans
        _write(_span(i, 1, 98 + i, {"k": "v"}))

    real_delete = services._delete_chunked

    def racing_delete(queryset: Any, chunk_size: int, limit: int | None = None) -> int:
        if queryset.model is TraceSummary:
            real_atomic = transaction.atomic
            fired = []

            def atomic(*args: Any, **kwargs: Any) -> Any:
                # After the expired ids were read, before they are deleted: a writer
                # commits a late span of trace 1 (start 50 s, with the attribute).
                if not fired:
                    fired.append(True)
                    _write(_span(1, 2, 50, {"k": "v"}))
                return real_atomic(*args, **kwargs)

            monkeypatch.setattr(services, "transaction", SimpleNamespace(atomic=atomic))
            try:
                return real_delete(queryset, chunk_size, limit)
            finally:
                monkeypatch.setattr(services, "transaction", transaction)
        return real_delete(queryset, chunk_size, limit)

    monkeypatch.setattr(services, "_delete_chunked", racing_delete)
    cleanup_spans(
        now=to_datetime(T0_US + 60 * SECOND), max_age=timedelta(seconds=30), max_rows=None
    )
    _write(_span(1, 3, 200, {}))  # trace 1's next span: the newest trace by start

    query = TraceQuery(attribute=("k", "v"), per_page=2)
    monkeypatch.setattr(search, "COUNT_CAP", 1)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    found, reference = both_searches(query, monkeypatch, chart_limit=1)
    # Trace 1 has a stored span with the attribute (start 50 s): it must be found, and
    # where its summary sorts.
    assert SpanAttribute.objects.filter(trace_id=f"{1:032x}").exists()
    assert found == reference
    # The summary was extended by the late span, so retention kept it (and its start).
    assert TraceSummary.objects.get(trace_id=f"{1:032x}").start_us == T0_US


def test_the_walk_is_taken_and_stops_before_the_oldest_traces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other tests of the walk pass just as well with it bypassed (every match read
    and sorted at once): here the summaries read must leave the oldest traces out."""
    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    for i in range(1, 41):
        _write(_span(i, 1, i, {"k": "v"}))
    with CaptureQueriesContext(connection) as queries:
        found = search_traces(query=TraceQuery(attribute=("k", "v"), per_page=2), chart_limit=2)
    summaries = [q["sql"] for q in queries.captured_queries if "traces_tracesummary" in q["sql"]]
    assert [row.trace_id for row in found.page.rows] == [f"{40:032x}", f"{39:032x}"]
    assert len(summaries) == 1
    assert f"{40:032x}" in summaries[0] and f"{1:032x}" not in summaries[0]


def test_rounds_never_read_a_trace_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loose bounds (every other trace has its attribute on a span 200 s after its root)
    take several rounds; each round re-read the traces of the rounds before it, ~2.2x
    the summaries the single sorted read of every match costs at worst (PostgreSQL,
    20,000 matches, half 200 s late: 97 ms against 66 ms)."""
    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    for i in range(1, 41):
        _write(_span(i, 1, i, {} if i % 2 else {"k": "v"}))
        if i % 2:
            _write(_span(i, 2, i + 200, {"k": "v"}))
    query = TraceQuery(attribute=("k", "v"), per_page=2)
    with CaptureQueriesContext(connection) as queries:
        found = search_traces(query=query, chart_limit=2)
    assert found == both_searches(query, monkeypatch)[1]
    summaries = [q["sql"] for q in queries.captured_queries if "traces_tracesummary" in q["sql"]]
    assert len(summaries) > 1  # several rounds
    reads = sum(sql.count(f"{i:032x}") for sql in summaries for i in range(1, 41))
    assert reads <= 40


def test_a_late_old_span_written_during_retention_keeps_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A span that started before the cutoff, written after retention deleted the old
    spans but before it deleted the expired summaries, lost its summary: kept until the
    next run, a later span of the trace created a summary starting after the index
    row's first start, and the early stop missed the trace in the meantime."""
    _write(_span(1, 1, 0, {}))  # trace 1: an old root
    for i in range(2, 6):
        _write(_span(i, 1, 98 + i, {"k": "v"}))
    real_delete = services._delete_chunked

    def racing_delete(queryset: Any, chunk_size: int, limit: int | None = None) -> int:
        if queryset.model is TraceSummary:
            _write(_span(1, 2, 20, {"k": "v"}))  # late, from before the cutoff
        return real_delete(queryset, chunk_size, limit)

    monkeypatch.setattr(services, "_delete_chunked", racing_delete)
    cleanup_spans(
        now=to_datetime(T0_US + 60 * SECOND), max_age=timedelta(seconds=30), max_rows=None
    )
    _write(_span(1, 3, 200, {}))
    query = TraceQuery(attribute=("k", "v"), per_page=2)
    monkeypatch.setattr(search, "COUNT_CAP", 1)
    monkeypatch.setattr(search, "_BOUND_SLACK", 0)
    found, reference = both_searches(query, monkeypatch, chart_limit=1)
    assert found == reference
