"""Retention by age and by row count: service, background worker and `manage.py spans`."""

from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.processor import DatabaseSpanProcessor
from dashboard.traces.retention import RetentionWorker
from dashboard.traces.services import write_spans
from tests.clock import FakeClock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_request_spans")]

NOW = 1_800_000_000.0  # wall-clock seconds: span times are wall-clock


def add_trace(name: str, start: float, spans: int = 3, step: float = 1.0) -> str:
    """A root and ``spans - 1`` children ``step`` seconds apart, starting at ``start``."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    ns = int(start * 1e9)
    root = tracer.start_span(name, start_time=ns)
    context = trace.set_span_in_context(root)
    for i in range(1, spans):
        child = tracer.start_span(
            f"{name}-{i}", context=context, start_time=ns + int(i * step * 1e9)
        )
        child.end(end_time=ns + int(i * step * 1e9) + 1000)
    root.end(end_time=ns + int(spans * step * 1e9))
    write_spans(memory.get_finished_spans(), masker=Masker(()))
    return f"{root.get_span_context().trace_id:032x}"


def test_age_retention_removes_older_spans_and_fully_expired_traces() -> None:
    clock = FakeClock(NOW)
    old = add_trace("old", NOW - 7200)
    middle = add_trace("middle", NOW - 1800)
    recent = add_trace("recent", NOW - 60)
    worker = RetentionWorker(max_age=timedelta(hours=1), max_rows=None, interval=60, clock=clock)

    result = worker.run_once()
    assert (result.spans, result.traces) == (3, 1)
    assert set(SpanRecord.objects.values_list("trace_id", flat=True)) == {middle, recent}
    assert set(TraceSummary.objects.values_list("trace_id", flat=True)) == {middle, recent}
    assert not SpanRecord.objects.filter(trace_id=old).exists()

    clock.advance(1900)  # now the middle trace is 3700 s old
    result = worker.run_once()
    assert result.spans == 3
    assert set(SpanRecord.objects.values_list("trace_id", flat=True)) == {recent}
    assert list(TraceSummary.objects.values_list("trace_id", flat=True)) == [recent]
    assert worker.runs == 2 and worker.last_result == result


def test_row_retention_keeps_only_the_newest_spans_in_chunks() -> None:
    oldest = add_trace("a", NOW - 300, spans=4)
    middle = add_trace("b", NOW - 200, spans=4)
    newest = add_trace("c", NOW - 100, spans=4)
    worker = RetentionWorker(
        max_age=None, max_rows=5, interval=60, clock=FakeClock(NOW), chunk_size=2
    )
    with CaptureQueriesContext(connection) as queries:
        result = worker.run_once()
    assert result.spans == 7
    kept = list(SpanRecord.objects.order_by("start").values_list("name", flat=True))
    assert kept == ["b-3", "c", "c-1", "c-2", "c-3"]
    # The first trace is gone completely, with its summary; the others keep theirs.
    assert set(TraceSummary.objects.values_list("trace_id", flat=True)) == {middle, newest}
    assert not SpanRecord.objects.filter(trace_id=oldest).exists()
    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) >= 4  # 7 rows in chunks of 2 (plus the summary delete)


def test_both_limits_apply_together() -> None:
    add_trace("expired", NOW - 4000, spans=2)
    add_trace("kept-a", NOW - 50, spans=2)
    add_trace("kept-b", NOW - 10, spans=2)
    worker = RetentionWorker(
        max_age=timedelta(hours=1), max_rows=3, interval=60, clock=FakeClock(NOW)
    )
    assert worker.run_once().spans == 3
    assert list(SpanRecord.objects.order_by("start").values_list("name", flat=True)) == [
        "kept-a-1",
        "kept-b",
        "kept-b-1",
    ]


def test_background_worker_runs_periodically_until_stopped() -> None:
    add_trace("expired", NOW - 7200)
    worker = RetentionWorker(
        max_age=timedelta(hours=1), max_rows=None, interval=0.01, clock=FakeClock(NOW)
    )
    assert not worker.running
    assert worker.start() is True
    assert worker.start() is False  # already running
    deadline = time.monotonic() + 5
    while worker.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the thread, not for time to pass in the logic
    worker.stop()
    assert worker.runs >= 2 and not worker.running
    assert not SpanRecord.objects.exists()


def test_processor_starts_retention_lazily_on_its_first_span() -> None:
    worker = RetentionWorker(max_age=timedelta(hours=1), max_rows=None, interval=60)
    processor = DatabaseSpanProcessor(masked_keys=(), on_first_span=worker.start)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    assert not worker.running
    with provider.get_tracer("t").start_as_current_span("first"):
        pass
    assert worker.running
    worker.stop()
    processor.shutdown()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        RetentionWorker(max_age=None, max_rows=None, interval=0)


def _now() -> float:
    return time.time()


def test_cleanup_command_dry_run_counts_without_deleting() -> None:
    add_trace("expired", _now() - 7200)
    add_trace("fresh", _now() - 60)
    out = StringIO()
    call_command("spans", "cleanup", "--max-age", "1h", "--dry-run", stdout=out)
    assert "Would delete 3 spans and 1 trace summaries" in out.getvalue()
    assert SpanRecord.objects.count() == 6 and TraceSummary.objects.count() == 2


def test_cleanup_command_deletes_by_age_and_by_rows() -> None:
    add_trace("expired", _now() - 7200)
    add_trace("fresh", _now() - 60)
    out = StringIO()
    call_command("spans", "cleanup", "--max-age", "1h", stdout=out)
    assert "Deleted 3 spans and 1 trace summaries" in out.getvalue()
    assert set(SpanRecord.objects.values_list("name", flat=True)) == {"fresh", "fresh-1", "fresh-2"}
    call_command("spans", "cleanup", "--max-rows", "1", stdout=StringIO())
    assert list(SpanRecord.objects.values_list("name", flat=True)) == ["fresh-2"]


def test_cleanup_command_uses_the_retention_settings_by_default(settings: Any) -> None:
    settings.TRACES_MAX_AGE = "10m"
    settings.TRACES_MAX_ROWS = 100
    add_trace("older than ten minutes", _now() - 900)
    out = StringIO()
    call_command("spans", "cleanup", stdout=out)
    assert "Deleted 3 spans" in out.getvalue() and "max age 10m" in out.getvalue()


def test_cleanup_command_rejects_bad_limits() -> None:
    with pytest.raises(CommandError, match="not a duration"):
        call_command("spans", "cleanup", "--max-age", "soon")
    with pytest.raises(CommandError, match="must be >= 1"):
        call_command("spans", "cleanup", "--max-rows", "0")


def test_stats_command_reports_totals() -> None:
    add_trace("one", _now() - 30, spans=2)
    out = StringIO()
    call_command("spans", "stats", stdout=out)
    text = out.getvalue()
    assert "spans:       2" in text and "traces:      1" in text and "error spans: 0" in text
