"""Telemetry facade: OpenTelemetry tracing and prometheus_client metrics, seed-compatible.

Usage::

    from resilience import telemetry

    @telemetry.trace("process_workflow", attributes={"priority": "high"})
    async def process_workflow(workflow_id): ...

    span = telemetry.tracer.start_span("agent_execution", attributes={"agent_id": "123"})
    try:
        span.set_status("OK")
    finally:
        telemetry.tracer.end_span(span)

    with telemetry.tracer.span("load") as span:
        span.add_event("cache miss")

    telemetry.metrics.increment_counter("tasks.completed")
    telemetry.metrics.set_gauge("active_agents", 5, labels={"pool": "gpu"})
    telemetry.metrics.record_histogram("task_duration_ms", 250.5)

Tracing uses the global OpenTelemetry TracerProvider (installing an SDK one, with
``service.name`` from ``OTEL_SERVICE_NAME`` or ``"resilience"``, if there is none), so
Django/ASGI auto-instrumentation joins the same traces. An application that installs
its own global provider must do so before the first span (OpenTelemetry's global is
set-once); otherwise attach exporters with :func:`add_span_processor` or
:func:`configure` at start-up. Tests swap in a private provider with
``configure(tracer_provider=...)`` and go back with ``configure()``. Threads do not
inherit the current span: use :func:`wrap_context` / :func:`run_in_executor`.

``metrics`` owns a private prometheus_client registry (``metrics.registry``) that also
publishes every circuit breaker and rate limiter under resilience4j's metric names at
scrape time, plus prometheus_client's process, GC and platform collectors; serve
``metrics.render_prometheus()`` with :data:`PROMETHEUS_CONTENT_TYPE`. Histograms
recorded in milliseconds (``*_ms``) are exported in seconds (``*_seconds``).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from resilience.telemetry._collectors import BREAKER_STATES, Resilience4jCollector
from resilience.telemetry._metrics import (
    DEFAULT_BUCKETS,
    HistogramSnapshot,
    Metrics,
    MetricsSnapshot,
)
from resilience.telemetry._names import prometheus_name
from resilience.telemetry._process import register_process_collectors
from resilience.telemetry._provider import (
    DEFAULT_SERVICE_NAME,
    add_span_processor,
    build_provider,
    configure,
    provider,
)
from resilience.telemetry._span import Span, StatusLike
from resilience.telemetry._tracing import (
    Tracer,
    current_span,
    extract,
    inject,
    run_in_executor,
    trace,
    tracer,
    wrap_context,
)

__all__ = [
    "BREAKER_STATES",
    "DEFAULT_BUCKETS",
    "DEFAULT_SERVICE_NAME",
    "PROMETHEUS_CONTENT_TYPE",
    "HistogramSnapshot",
    "Metrics",
    "MetricsSnapshot",
    "Resilience4jCollector",
    "Span",
    "StatusLike",
    "Tracer",
    "add_span_processor",
    "build_provider",
    "configure",
    "current_span",
    "extract",
    "inject",
    "metrics",
    "prometheus_name",
    "provider",
    "register_process_collectors",
    "run_in_executor",
    "trace",
    "tracer",
    "wrap_context",
]

#: The Content-Type of :meth:`Metrics.render_prometheus` output.
PROMETHEUS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST

#: The process-wide metrics (private registry, resilience4j collector registered, and
#: the ``process_*``, ``python_gc_*`` and ``python_info`` collectors).
metrics = Metrics()
register_process_collectors(metrics.registry)
