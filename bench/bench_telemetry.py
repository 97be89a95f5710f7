"""Telemetry cost: a ``@telemetry.trace`` span against a bare call, a hand-written floor
and the raw OpenTelemetry SDK; metric updates against raw prometheus_client.

Spans go to a no-op exporter through the same processors on both sides.
:func:`build_provider` is the hook for more processors (the dashboard's database span
processor): ``tables(extra_processors=lambda: [DbSpanProcessor(...)])``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bench._harness import Row, Table, per_call_ns
from resilience import telemetry

SPAN_CALLS = {"number": 20_000, "repeat": 5}


class NoopExporter(SpanExporter):
    """Accepts every batch and does nothing: measures the pipeline, not the export."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _processor(kind: str) -> SpanProcessor:
    if kind == "simple":
        return SimpleSpanProcessor(NoopExporter())
    # A queue big enough that no span is dropped: dropping is cheaper than queueing.
    return BatchSpanProcessor(NoopExporter(), max_queue_size=1 << 20)


def build_provider(
    kind: str = "simple", extra_processors: Sequence[SpanProcessor] = ()
) -> TracerProvider:
    """Our provider as the facade builds it, with a no-op exporter plus ``extra_processors``."""
    return telemetry.build_provider(span_processors=[_processor(kind), *extra_processors])


def _work() -> int:
    return 1


def _floor() -> Callable[[], object]:
    current: ContextVar[tuple[str, int] | None] = ContextVar("bench_span", default=None)
    finished: deque[tuple[str, int, int]] = deque(maxlen=4096)
    now = time.time_ns

    def span() -> object:
        start = now()
        token = current.set(("work", start))
        try:
            return _work()
        finally:
            current.reset(token)
            finished.append(("work", start, now()))

    return span


def _raw_sdk(provider: TracerProvider) -> Callable[[], object]:
    tracer = provider.get_tracer("bench")

    def span() -> object:
        with tracer.start_as_current_span("work"):
            return _work()

    return span


def _ours_decorated() -> Callable[[], object]:
    return telemetry.trace("work")(_work)


def _ours_context_manager() -> Callable[[], object]:
    def span() -> object:
        with telemetry.tracer.span("work"):
            return _work()

    return span


def _ours_start_end() -> Callable[[], object]:
    tracer = telemetry.tracer

    def span() -> object:
        handle = tracer.start_span("work")
        try:
            return _work()
        finally:
            tracer.end_span(handle)

    return span


def span_table(
    kind: str, extra_processors: Callable[[], Sequence[SpanProcessor]] = lambda: ()
) -> Table:
    """One span per call, with a ``kind`` ("simple" / "batch") processor on both sides."""
    raw_provider = TracerProvider()
    raw_provider.add_span_processor(_processor(kind))
    for processor in extra_processors():
        raw_provider.add_span_processor(processor)
    ours = build_provider(kind, extra_processors())
    telemetry.configure(tracer_provider=ours)
    try:
        rows = [
            Row("bare call", per_call_ns(_work, **SPAN_CALLS)),
            Row("floor span", per_call_ns(_floor(), **SPAN_CALLS), "contextvar+time_ns+deque"),
            Row("raw OTel SDK", per_call_ns(_raw_sdk(raw_provider), **SPAN_CALLS),
                "start_as_current_span"),
            Row("@telemetry.trace", per_call_ns(_ours_decorated(), **SPAN_CALLS), "target <= 1.2x"),
            Row("tracer.span()", per_call_ns(_ours_context_manager(), **SPAN_CALLS)),
            Row("start_span/end_span", per_call_ns(_ours_start_end(), **SPAN_CALLS)),
        ]  # fmt: skip
    finally:
        telemetry.configure()
        raw_provider.shutdown()
        ours.shutdown()
    return Table(f"span cost, {kind} span processor + no-op exporter", "ns/span",
                 "raw OTel SDK", rows)  # fmt: skip


def metrics_table() -> Table:
    registry = CollectorRegistry()
    raw_counter = Counter("raw_c", "raw", registry=registry)
    raw_labelled = Counter("raw_l", "raw", ["method", "code"], registry=registry)
    raw_child = raw_labelled.labels("GET", "200")
    raw_gauge = Gauge("raw_g", "raw", registry=registry)
    raw_histogram = Histogram("raw_h", "raw", registry=registry, buckets=telemetry.DEFAULT_BUCKETS)
    metrics = telemetry.Metrics(resilience4j=False)
    labels = {"method": "GET", "code": "200"}
    inc, gauge, hist = metrics.increment_counter, metrics.set_gauge, metrics.record_histogram
    rows = [
        Row("raw Counter.inc()", per_call_ns(raw_counter.inc)),
        Row("raw labels(...).inc()", per_call_ns(lambda: raw_labelled.labels("GET", "200").inc())),
        Row("raw cached child .inc()", per_call_ns(raw_child.inc)),
        Row("increment_counter", per_call_ns(lambda: inc("tasks.completed")), "target <= 1000"),
        Row("increment_counter+labels", per_call_ns(lambda: inc("http.requests", labels=labels)),
            "2 labels; target <= 1000"),
        Row("raw Gauge.set()", per_call_ns(lambda: raw_gauge.set(3))),
        Row("set_gauge", per_call_ns(lambda: gauge("active_agents", 3))),
        Row("raw Histogram.observe()", per_call_ns(lambda: raw_histogram.observe(250.5))),
        Row("record_histogram", per_call_ns(lambda: hist("task_duration_ms", 250.5)),
            "+ reservoir, min/max"),
        Row("record_histogram+labels",
            per_call_ns(lambda: hist("route_ms", 250.5, labels=labels))),
    ]  # fmt: skip
    return Table("metric update cost", "ns/call", "raw Counter.inc()", rows)


def tables(extra_processors: Callable[[], Sequence[SpanProcessor]] = lambda: ()) -> list[Table]:
    """Span tables (simple and batch processors) and the metrics table.

    Args:
        extra_processors: builds processors added to BOTH providers (e.g. the dashboard's
            database span processor), called once per table.
    """
    return [
        span_table("simple", extra_processors),
        span_table("batch", extra_processors),
        metrics_table(),
    ]
