"""Metrics: counters, gauges and histograms named by the caller, backed by prometheus_client.

Hot path: one dict lookup of a cached child, keyed by the caller's name (plus the
frozenset of label items when labelled, so the order of the labels does not matter),
then the child's own ``inc``/``set``/``observe``. Counters and
gauges are prometheus_client's; histograms are :mod:`._histogram` series (cheaper, and
they keep the recent values for percentiles) exposed through a prometheus_client collector.
Everything else (name validation, the label-set check, creating the metric) runs once
per new series, under a lock.

Cardinality: a metric has at most ``max_series`` label sets. Past that, new label
values are folded into one overflow series (every label ``"__overflow__"``); each
folded update goes through the slow path (it is not cached, so the cache stays
bounded too), is counted in ``metrics.series_overflow{metric=...}``, and the first one
of each metric is logged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final, TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.registry import Collector

from resilience._validate import positive_int
from resilience.telemetry._collectors import Resilience4jCollector
from resilience.telemetry._histogram import HistogramCollector, HistogramSeries, HistogramSnapshot
from resilience.telemetry._names import (
    check_namespace,
    label_key,
    label_names,
    label_values,
    prometheus_name,
)
from resilience.telemetry._units import base_unit

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "OVERFLOW",
    "HistogramSnapshot",
    "Metrics",
    "MetricsSnapshot",
]

logger = logging.getLogger("resilience.telemetry")

DEFAULT_MAX_SERIES: Final = 1000
"""Label sets a metric may have before new ones fold into its overflow series."""
OVERFLOW: Final = "__overflow__"
"""The value of every label of a metric's overflow series."""
OVERFLOW_METRIC: Final = "metrics.series_overflow"
"""Counter of updates folded into an overflow series, labelled by ``metric``."""

#: Histogram buckets wide enough for seconds and milliseconds alike (1 ms .. 10 000).
DEFAULT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
)  # fmt: skip


class MetricsSnapshot(TypedDict):
    """Every series keyed ``name`` or ``name{label="value",...}`` (label names sorted)."""

    counters: dict[str, float]
    gauges: dict[str, float]
    histograms: dict[str, HistogramSnapshot]


class _Family:
    __slots__ = ("kind", "labelnames", "metric", "name", "prom", "series")

    def __init__(
        self, name: str, kind: str, prom: str, labelnames: tuple[str, ...], metric: Any
    ) -> None:
        self.name = name
        self.kind = kind
        self.prom = prom
        self.labelnames = labelnames
        self.metric: Collector = metric
        self.series: dict[tuple[str, ...], Any] = {}


class Metrics:
    """Counters, gauges and histograms keyed by the caller's names.

    Names map to Prometheus names by :func:`prometheus_name` (``.``/``-`` → ``_``,
    optional ``namespace`` prefix; counters get ``_total`` from prometheus_client). A
    metric's kind and label names are fixed by its first use.

    Args:
        registry: the prometheus_client registry to use; default a new private one.
        namespace: prefix of every Prometheus name (``""`` for none).
        reservoir_size: recent values kept per histogram series for percentiles.
        buckets: histogram bucket bounds (Prometheus exposition only).
        resilience4j: register the scrape-time :class:`Resilience4jCollector` that
            publishes every circuit breaker and rate limiter under resilience4j names.
        max_series: label sets per metric; updates with new label values past it go
            to the overflow series (see the module docstring). Default 1000.

    Raises:
        ValueError: invalid namespace, reservoir size, buckets or max_series.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "",
        reservoir_size: int = 1024,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        resilience4j: bool = True,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = check_namespace(namespace)
        self._reservoir_size = positive_int("reservoir_size", reservoir_size)
        self._buckets = _check_buckets(buckets)
        self.max_series = positive_int("max_series", max_series)
        self._overflowed: set[str] = set()
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._by_prom: dict[str, str] = {}
        # Hot-path caches: name (no labels) or (name, label items) → child / _Series.
        self._counters: dict[Hashable, Counter] = {}
        self._gauges: dict[Hashable, Gauge] = {}
        self._histograms: dict[Hashable, HistogramSeries] = {}
        self.collector: Resilience4jCollector | None = None
        if resilience4j:
            self.collector = Resilience4jCollector()
            self.registry.register(self.collector)

    def prometheus_name(self, name: str) -> str:
        """The Prometheus name ``name`` maps to (before any ``_total`` suffix).

        Raises:
            ValueError: invalid name.
        """
        return prometheus_name(name, self.namespace)

    # -- hot path -------------------------------------------------------------------

    def increment_counter(
        self, name: str, value: float = 1, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` (>= 0) to the counter ``name``.

        Raises:
            ValueError: invalid name or labels, a label set other than the first
                use's, the name used by another kind, or a negative value.
        """
        try:
            child = self._counters.get(name if not labels else (name, frozenset(labels.items())))
        except (TypeError, AttributeError):  # unhashable values, labels not a mapping
            child = None
        if child is None:
            child = self._child("counter", name, labels)
        child.inc(value)

    def set_gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set the gauge ``name`` to ``value``.

        Raises:
            ValueError: as :meth:`increment_counter` (except for negative values).
        """
        try:
            child = self._gauges.get(name if not labels else (name, frozenset(labels.items())))
        except (TypeError, AttributeError):
            child = None
        if child is None:
            child = self._child("gauge", name, labels)
        child.set(value)

    def record_histogram(
        self, name: str, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        """Record one observation of ``value`` in the histogram ``name``.

        Raises:
            ValueError: as :meth:`increment_counter`, or ``value`` is NaN.
        """
        try:
            series = self._histograms.get(name if not labels else (name, frozenset(labels.items())))
        except (TypeError, AttributeError):
            series = None
        if series is None:
            series = self._child("histogram", name, labels)
        if value != value:  # NaN would poison sum, min and max
            raise ValueError(f"histogram {name!r} cannot record NaN")
        series.observe(value)

    # -- slow path ------------------------------------------------------------------

    def _child(self, kind: str, name: str, labels: Mapping[str, str] | None) -> Any:
        with self._lock:
            family = self._families.get(name) if isinstance(name, str) else None
            if family is None:
                prom = prometheus_name(name, self.namespace)
            elif family.kind != kind:
                raise ValueError(f"metric {name!r} is a {family.kind}, not a {kind}")
            names = label_names(name, labels, histogram=kind == "histogram") if labels else ()
            values = label_values(name, labels, names) if labels else ()
            if family is None:
                family = self._create(kind, name, prom, names)
            elif names != family.labelnames:
                raise ValueError(
                    f"metric {name!r} has labels {list(family.labelnames)}, got {list(names)}"
                )
            child = family.series.get(values)
            if child is None:
                if len(family.series) >= self.max_series and names:
                    return self._overflow(family)
                child = self._new_series(family, values)
            cache: dict[Hashable, Any] = getattr(self, f"_{kind}s")
            cache[name if not labels else (name, frozenset(labels.items()))] = child
            return child

    def _new_series(self, family: _Family, values: tuple[str, ...]) -> Any:
        metric: Any = family.metric
        if family.kind == "histogram":
            child = metric.child(values)
        else:
            child = metric.labels(*values) if family.labelnames else metric
        family.series[values] = child
        return child

    def _overflow(self, family: _Family) -> Any:
        """The overflow series of ``family`` (the lock is held); counts and logs the fold."""
        values = (OVERFLOW,) * len(family.labelnames)
        child = family.series.get(values)
        if child is None:
            child = self._new_series(family, values)
        counter = self._families.get(OVERFLOW_METRIC)
        if counter is None:
            prom = prometheus_name(OVERFLOW_METRIC, self.namespace)
            counter = self._create("counter", OVERFLOW_METRIC, prom, ("metric",))
        folded = counter.series.get((family.name,))
        if folded is None:
            folded = self._new_series(counter, (family.name,))
        folded.inc()
        if family.name not in self._overflowed:
            self._overflowed.add(family.name)
            logger.warning(
                "metric %r reached max_series=%d label sets; new label values are folded "
                "into its %r series (counted in %s)",
                family.name,
                self.max_series,
                OVERFLOW,
                OVERFLOW_METRIC,
            )
        return child

    def _create(self, kind: str, name: str, prom: str, names: tuple[str, ...]) -> _Family:
        owner = self._by_prom.get(prom)
        if owner is not None:
            raise ValueError(f"metric {name!r} maps to {prom!r}, already used by {owner!r}")
        doc = f"{name} ({kind})"
        # The registry raises ValueError itself if another collector has the name.
        metric: Collector
        if kind == "counter":
            metric = Counter(prom, doc, names, registry=self.registry)
        elif kind == "gauge":
            metric = Gauge(prom, doc, names, registry=self.registry)
        else:
            # Exported in base units: "x_ms" is published as "x_seconds" (see _units.py).
            exported, scale = base_unit(prom)
            if scale != 1.0:
                doc = f"{name} (histogram, converted to base units: x{scale:g})"
            metric = HistogramCollector(
                exported, doc, names, self._buckets, self._reservoir_size, scale
            )
            self.registry.register(metric)
        family = _Family(name, kind, prom, names, metric)
        self._families[name] = family
        self._by_prom[prom] = name
        return family

    # -- reading ----------------------------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """Every series' current value, keyed by the caller's names.

        Returns:
            ``{"counters": {key: value}, "gauges": {key: value}, "histograms": {key:
            {count, sum, min, max, p50, p95, p99}}}`` where ``key`` is ``name`` or
            ``name{a="x",b="y"}``. Histogram percentiles come from a bounded reservoir
            of the most recent observations per series (nearest-rank), not buckets.
        """
        result = MetricsSnapshot(counters={}, gauges={}, histograms={})
        with self._lock:
            families = list(self._families.values())
        for family in families:
            samples = _samples(family) if family.kind != "histogram" else {}
            if family.kind == "counter":
                for values, sample in samples.get("_total", {}).items():
                    result["counters"][label_key(family.name, family.labelnames, values)] = sample
            elif family.kind == "gauge":
                for values, sample in samples.get("", {}).items():
                    result["gauges"][label_key(family.name, family.labelnames, values)] = sample
            else:
                for values, series in list(family.series.items()):
                    key = label_key(family.name, family.labelnames, values)
                    result["histograms"][key] = series.snapshot()
        return result

    def reset(self) -> None:
        """Forget every metric: unregister them, so names may be reused with new kinds."""
        with self._lock:
            for family in self._families.values():
                self.registry.unregister(family.metric)
            self._families = {}
            self._by_prom = {}
            self._overflowed = set()
            self._counters = {}
            self._gauges = {}
            self._histograms = {}

    def render_prometheus(self) -> bytes:
        """The registry in the Prometheus text exposition format (``generate_latest``).

        Serve it with ``content_type=resilience.telemetry.PROMETHEUS_CONTENT_TYPE``.
        """
        return generate_latest(self.registry)


def _samples(family: _Family) -> dict[str, dict[tuple[str, ...], float]]:
    """Samples of a family grouped by suffix (``""``, ``_total``, ``_sum``...) then labels."""
    grouped: dict[str, dict[tuple[str, ...], float]] = {}
    for metric in family.metric.collect():
        for sample in metric.samples:
            suffix = sample.name[len(family.prom) :]
            values = tuple(sample.labels[key] for key in family.labelnames)
            grouped.setdefault(suffix, {})[values] = sample.value
    return grouped


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    try:
        bounds = tuple(float(bound) for bound in buckets)
    except (TypeError, ValueError):
        raise ValueError(f"buckets must be numbers, got {buckets!r}") from None
    finite = bounds[:-1] if bounds and bounds[-1] == math.inf else bounds
    if (
        not finite
        or not all(math.isfinite(bound) for bound in finite)
        or any(low >= high for low, high in zip(finite, finite[1:], strict=False))
    ):
        raise ValueError(f"buckets must be finite, strictly increasing, non-empty: {buckets!r}")
    return finite
