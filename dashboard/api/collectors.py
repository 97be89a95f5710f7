"""Scrape-time metrics of the dashboard's own pipelines, for Prometheus and the alert rules.

``resilience_spans_{queued,dropped,written,failed}`` read the span processor's counters
(``dashboard.traces.tracing.stats()``); ``resilience_checkpoint_verification_failures_total``
reads the count the alert sources keep; ``resilience_checkpoint_retention_*`` read the
retention worker. Nothing runs between scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_lock = threading.Lock()
_registered: set[int] = set()


class DashboardCollector(Collector):
    """The span pipeline and checkpoint counters as Prometheus families."""

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        from dashboard.alerts.sources import checkpoint_verification_failures
        from dashboard.checkpoints import retention
        from dashboard.traces import tracing

        stats = tracing.stats()
        queued = GaugeMetricFamily("resilience_spans_queued", "Spans waiting to be stored")
        queued.add_metric([], stats["queued"])
        yield queued
        for key, help_text in (
            ("dropped", "Spans dropped because the queue was full"),
            ("written", "Spans stored in the database"),
            ("failed", "Spans whose batch failed to store"),
        ):
            family = CounterMetricFamily(f"resilience_spans_{key}", help_text)
            family.add_metric([], stats[key])  # type: ignore[literal-required]
            yield family
        failures = CounterMetricFamily(
            "resilience_checkpoint_verification_failures",
            "Checkpoints that failed verification (hash, HMAC or decoding)",
        )
        failures.add_metric([], checkpoint_verification_failures())
        yield failures
        yield from retention.metric_families()


def register(registry: CollectorRegistry) -> bool:
    """Register one DashboardCollector on ``registry``; False if already there."""
    with _lock:
        if id(registry) in _registered:
            return False
        registry.register(DashboardCollector())
        _registered.add(id(registry))
        return True
