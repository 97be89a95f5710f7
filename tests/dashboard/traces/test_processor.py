"""Real SDK spans → SpanRecord rows via the batching processor (and the exporter)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from dashboard.traces import conf, tracing
from dashboard.traces.exporter import DatabaseSpanExporter
from dashboard.traces.masking import MASK, Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.processor import DatabaseSpanProcessor
from dashboard.traces.services import write_spans

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_request_spans")]


def _provider(*processors: Any, service: str = "shop") -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _finished(count: int, *, attributes: dict[str, Any] | None = None) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    tracer = _provider(SimpleSpanProcessor(memory)).get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}", attributes=attributes):
            pass
    return list(memory.get_finished_spans())


def test_spans_round_trip_with_parent_links_attributes_and_exception_stack_trace() -> None:
    processor = DatabaseSpanProcessor(masked_keys=conf.DEFAULT_MASKED_KEYS, interval=0.05)
    tracer = _provider(processor).get_tracer("test")
    with (
        tracer.start_as_current_span(
            "checkout", kind=SpanKind.SERVER, attributes={"order.id": 42, "tags": ("a", "b")}
        ) as root,
        tracer.start_as_current_span("charge card") as child,
    ):
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            child.record_exception(exc)
            child.set_status(Status(StatusCode.ERROR, "declined"))
    assert processor.force_flush()

    rows = {row.name: row for row in SpanRecord.objects.all()}
    assert set(rows) == {"checkout", "charge card"}
    parent, kid = rows["checkout"], rows["charge card"]
    assert parent.trace_id == kid.trace_id == f"{root.get_span_context().trace_id:032x}"
    assert parent.span_id == f"{root.get_span_context().span_id:016x}"
    assert kid.span_id == f"{child.get_span_context().span_id:016x}"
    assert parent.parent_span_id is None and kid.parent_span_id == parent.span_id
    assert (parent.kind, parent.status, parent.service) == ("SERVER", "UNSET", "shop")
    assert parent.attributes == {"order.id": 42, "tags": ["a", "b"]}
    assert parent.resource["service.name"] == "shop"
    assert (kid.status, kid.status_message) == ("ERROR", "declined")
    assert parent.start <= kid.start and kid.end <= parent.end
    assert parent.duration_us == (parent.end - parent.start) // timedelta(microseconds=1)
    [event] = kid.events
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "card declined"
    stack = event["attributes"]["exception.stacktrace"]
    assert "Traceback" in stack and 'raise ValueError("card declined")' in stack

    summary = TraceSummary.objects.get()
    assert (summary.trace_id, summary.root_name, summary.root_service) == (
        parent.trace_id,
        "checkout",
        "shop",
    )
    assert (summary.span_count, summary.error_count) == (2, 1)
    assert summary.duration_us == summary.end_us - summary.start_us >= kid.duration_us
    assert processor.stats()["written"] == 2
    processor.shutdown()


def test_rows_are_written_on_the_worker_thread_not_the_callers() -> None:
    threads: list[str] = []

    def writer(spans: Any) -> int:
        threads.append(threading.current_thread().name)
        return len(spans)

    processor = DatabaseSpanProcessor(writer=writer, name="traces-test-worker")
    with _provider(processor).get_tracer("t").start_as_current_span("x"):
        pass
    assert processor.force_flush()
    assert threads == ["traces-test-worker"]
    processor.shutdown()


def test_worker_thread_and_first_span_hook_start_lazily_and_once() -> None:
    started: list[int] = []
    processor = DatabaseSpanProcessor(
        writer=len, name="traces-lazy-worker", on_first_span=lambda: started.append(1)
    )
    tracer = _provider(processor).get_tracer("t")
    names = lambda: [t.name for t in threading.enumerate()]  # noqa: E731
    assert "traces-lazy-worker" not in names() and started == []
    for _ in range(3):
        with tracer.start_as_current_span("x"):
            pass
    assert "traces-lazy-worker" in names() and started == [1]
    processor.shutdown()


def test_a_trace_split_over_batches_keeps_one_summary_with_the_real_root() -> None:
    memory = InMemorySpanExporter()
    tracer = _provider(SimpleSpanProcessor(memory)).get_tracer("t")
    root = tracer.start_span("root", start_time=1_000_000_000)
    context = trace.set_span_in_context(root)
    first = tracer.start_span("first", context=context, start_time=1_100_000_000)
    first.end(end_time=1_300_000_000)
    second = tracer.start_span("second", context=context, start_time=1_200_000_000)
    second.set_status(Status(StatusCode.ERROR))
    second.end(end_time=1_900_000_000)
    root.end(end_time=1_500_000_000)
    spans = list(memory.get_finished_spans())  # first, second, root
    masker = Masker(conf.DEFAULT_MASKED_KEYS)
    assert write_spans(spans[:1], masker=masker) == 1
    summary = TraceSummary.objects.get()
    assert (summary.root_name, summary.span_count) == ("first", 1)
    write_spans(spans[1:], masker=masker)
    summary.refresh_from_db()
    assert (summary.root_name, summary.root_service) == ("root", "shop")
    assert (summary.span_count, summary.error_count) == (3, 1)
    assert (summary.start_us, summary.end_us) == (1_000_000, 1_900_000)
    assert summary.duration_us == 900_000


def test_sensitive_values_are_masked_in_attributes_events_and_resource() -> None:
    processor = DatabaseSpanProcessor(masked_keys=conf.DEFAULT_MASKED_KEYS)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop", "deploy.api_key": "abc"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(processor)
    attributes = {
        "db.user": "bob",
        "password": "hunter2",
        "http.request.header.authorization": "Bearer t0k",
        "X-API-Key": "k-123",
        "session_cookie": "c=1",
        "refresh_token": "r",
        "client.Secret": "s",
    }
    with provider.get_tracer("t").start_as_current_span("login", attributes=attributes) as span:
        span.add_event("retry", {"user.password": "again", "attempt": 2})
    assert processor.force_flush()
    row = SpanRecord.objects.get()
    assert row.attributes == {
        "db.user": "bob",
        "password": MASK,
        "http.request.header.authorization": MASK,
        "X-API-Key": MASK,
        "session_cookie": MASK,
        "refresh_token": MASK,
        "client.Secret": MASK,
    }
    assert row.events[0]["attributes"] == {"user.password": MASK, "attempt": 2}
    assert row.resource["deploy.api_key"] == MASK and row.resource["service.name"] == "shop"
    processor.shutdown()


def test_masked_keys_come_from_the_traces_masked_keys_setting(settings: Any) -> None:
    settings.TRACES_MASKED_KEYS = ["ssn"]
    masker = Masker(conf.masked_keys())
    assert masker.mask({"user.ssn": "123", "password": "p"}) == {"user.ssn": MASK, "password": "p"}
    settings.TRACES_MASKED_KEYS = "ssn"
    with pytest.raises(Exception, match="TRACES_MASKED_KEYS"):
        conf.masked_keys()


def test_full_queue_drops_and_counts_without_blocking_the_caller() -> None:
    gate = threading.Event()
    written: list[int] = []

    def stuck(spans: Any) -> int:
        gate.wait(5)
        written.append(len(spans))
        return len(spans)

    processor = DatabaseSpanProcessor(writer=stuck, max_queue=5, max_batch=1, interval=0.01)
    tracer = _provider(processor).get_tracer("t")
    for _ in range(50):
        with tracer.start_as_current_span("x"):
            pass  # must return at once although the writer is stuck
    stats = processor.stats()
    assert stats["dropped"] >= 44
    gate.set()
    assert processor.force_flush()
    stats = processor.stats()
    assert stats["dropped"] + stats["written"] == 50 == stats["dropped"] + sum(written)
    processor.shutdown()


def test_database_failure_never_raises_and_is_counted_then_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Any, sql: str, params: Any = None) -> None:
        raise OperationalError("disk I/O error")

    processor = DatabaseSpanProcessor(masked_keys=(), interval=0.01)
    tracer = _provider(processor).get_tracer("t")
    with monkeypatch.context() as patch:
        patch.setattr(CursorWrapper, "executemany", broken)
        patch.setattr(CursorWrapper, "execute", broken)  # PostgreSQL: COPY, then one upsert
        for _ in range(3):
            with tracer.start_as_current_span("lost"):
                pass
        assert processor.force_flush()
    stats = processor.stats()
    assert (stats["failed"], stats["written"]) == (3, 0) and stats["failed_batches"] >= 1
    assert not SpanRecord.objects.exists()
    with tracer.start_as_current_span("kept"):
        pass
    assert processor.force_flush()
    assert list(SpanRecord.objects.values_list("name", flat=True)) == ["kept"]
    processor.shutdown()


def test_shutdown_flushes_queued_spans_and_later_spans_are_dropped() -> None:
    processor = DatabaseSpanProcessor(masked_keys=(), interval=30, max_batch=1000)
    tracer = _provider(processor).get_tracer("t")
    for _ in range(4):
        with tracer.start_as_current_span("queued"):
            pass
    processor.shutdown()
    assert SpanRecord.objects.count() == 4
    with tracer.start_as_current_span("too late"):
        pass
    assert processor.stats()["dropped"] == 1
    assert SpanRecord.objects.count() == 4
    processor.shutdown()  # idempotent


def test_disabled_processor_ignores_spans_without_counting_drops() -> None:
    processor = DatabaseSpanProcessor(masked_keys=())
    processor.enabled = False
    with _provider(processor).get_tracer("t").start_as_current_span("ignored"):
        pass
    assert processor.force_flush()
    assert processor.stats() == {
        "queued": 0,
        "dropped": 0,
        "written": 0,
        "failed": 0,
        "failed_batches": 0,
    }


def test_exporter_variant_stores_spans_through_otels_batch_processor() -> None:
    exporter = DatabaseSpanExporter(masked_keys=conf.DEFAULT_MASKED_KEYS)
    batch = BatchSpanProcessor(exporter, schedule_delay_millis=50)
    tracer = _provider(batch).get_tracer("t")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
        pass
    assert batch.force_flush()
    assert sorted(SpanRecord.objects.values_list("name", flat=True)) == ["inner", "outer"]
    assert exporter.written == 2
    batch.shutdown()


def test_spans_are_not_written_to_a_database_swapped_in_after_they_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import connections

    processor = DatabaseSpanProcessor(masked_keys=(), interval=30)
    tracer = _provider(processor).get_tracer("t")
    with tracer.start_as_current_span("ended before the swap"):
        pass
    # What a test runner's database teardown does while spans are still queued.
    monkeypatch.setitem(connections["default"].settings_dict, "NAME", "/nonexistent/dev.sqlite3")
    assert processor.force_flush()
    monkeypatch.undo()
    assert processor.stats()["failed"] == 1
    with tracer.start_as_current_span("ended after"):
        pass
    assert processor.force_flush()
    assert list(SpanRecord.objects.values_list("name", flat=True)) == ["ended after"]
    processor.shutdown()


def test_bad_settings_fail_at_construction_not_on_the_first_span() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        DatabaseSpanProcessor(max_queue=0)
    with pytest.raises(ValueError, match="interval"):
        DatabaseSpanProcessor(interval=-1)


def test_module_stats_expose_the_installed_processors_counters() -> None:
    stats = tracing.stats()
    assert set(stats) == {"queued", "dropped", "written", "failed", "failed_batches"}
    installed = tracing.processor()
    if installed is not None:
        assert stats == installed.stats()
