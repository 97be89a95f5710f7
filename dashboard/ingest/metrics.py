"""OTLP metrics → a small series store: one row per (service, instance, metric, labels),
its points, and retention.

Gauges and sums store their values (``kind`` gauge, counter for monotonic sums, sum
otherwise); histograms, exponential histograms and summaries store ``<name>_count``
and ``<name>_sum`` (as Prometheus names them). Labels are the data point's attributes,
masked and capped like span attributes. Points without a time or with a non-finite
value, points whose labels take more than ``MAX_LABELS_BYTES`` as JSON, points beyond
``max_points`` per request, and points of a new series once ``max_series`` series exist
(INGEST_MAX_METRIC_SERIES; existing series still take points), are rejected (counted
in the answer's ``partial_success``).

Writes happen in the request, in one transaction (metrics arrive far less often than
spans: a worker exports every few seconds). Creating series is serialised (SQLite's
IMMEDIATE transactions; an advisory lock on PostgreSQL) so that concurrent requests
cannot together overshoot the series cap. Points older than TRACES_MAX_AGE are
deleted at most once a minute, after a write; series with no point left go with them.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import orjson
from django.db import connection, transaction
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

from dashboard.traces.convert import to_us

from .models import MetricPoint, MetricSeries
from .spans import UNKNOWN_SERVICE, AttributeValues, CachingMasker, Limits, clean_text

_NAME_LENGTH = 255
MAX_LABELS_BYTES = 16 * 1024
# pg_advisory_xact_lock key taken while creating series: any constant of our own.
_SERIES_LOCK = 0x6D657472
_CLEANUP_EVERY = 60.0  # seconds
_cleanup_lock = threading.Lock()
_last_cleanup = -math.inf


@dataclass(frozen=True, slots=True)
class Point:
    service: str
    instance: str
    name: str
    labels: dict[str, Any]
    labels_key: str
    kind: str
    unit: str
    time_us: int
    value: float


@dataclass(slots=True)
class Points:
    points: list[Point] = field(default_factory=list)
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count

    def error_message(self) -> str:
        return "; ".join(f"{count} {reason}" for reason, count in self.reasons.items())


def _number(point: Any) -> float:
    return float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)


def _streams(metric: Any) -> Iterable[tuple[str, str, Any, Callable[[Any], float]]]:
    """(name, kind, data point, value of a point) for each value the metric carries."""
    data = metric.WhichOneof("data")
    name = metric.name
    if data == "gauge":
        for point in metric.gauge.data_points:
            yield name, "gauge", point, _number
    elif data == "sum":
        kind = "counter" if metric.sum.is_monotonic else "sum"
        for point in metric.sum.data_points:
            yield name, kind, point, _number
    elif data in ("histogram", "exponential_histogram", "summary"):
        for point in getattr(metric, data).data_points:
            yield f"{name}_count", "histogram", point, lambda p: float(p.count)
            yield f"{name}_sum", "histogram", point, lambda p: float(p.sum)


def convert(
    resource_metrics: Iterable[ResourceMetrics], *, limits: Limits, masker: CachingMasker
) -> Points:
    """Masked points for every valid data point (up to ``limits.max_spans``)."""
    result = Points()
    values = AttributeValues(limits, masker)
    for group in resource_metrics:
        resource = values.attributes(group.resource.attributes)
        service = resource.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        instance = resource.get("service.instance.id")
        instance = str(instance)[:_NAME_LENGTH] if instance is not None else ""
        for scope in group.scope_metrics:
            for metric in scope.metrics:
                unit = clean_text(metric.unit, 64)
                for name, kind, point, read in _streams(metric):
                    if len(result.points) >= limits.max_spans:
                        result.reject(f"data points beyond the limit of {limits.max_spans}")
                        continue
                    value = read(point)
                    reason = None
                    if not point.time_unix_nano:
                        reason = "data points without timeUnixNano"
                    elif not math.isfinite(value):
                        reason = "data points with a non-finite value"
                    elif not name:
                        reason = "metrics without a name"
                    else:
                        labels = values.attributes(point.attributes)
                        encoded = orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)
                        if len(encoded) > MAX_LABELS_BYTES:
                            reason = f"data points with labels over {MAX_LABELS_BYTES} bytes"
                    if reason is not None:
                        result.reject(reason)
                        continue
                    result.points.append(
                        Point(
                            service=service[:_NAME_LENGTH],
                            instance=instance,
                            name=clean_text(name, _NAME_LENGTH),
                            labels=labels,
                            labels_key=hashlib.sha256(encoded).hexdigest(),
                            kind=kind,
                            unit=unit,
                            time_us=point.time_unix_nano // 1000,
                            value=value,
                        )
                    )
    return result


def store(points: Points, *, max_series: int) -> int:
    """Write ``points`` (creating their series, up to ``max_series`` series in all), in one
    transaction; returns points written. Points of a new series beyond the cap are
    rejected in ``points``."""
    grouped: dict[tuple[str, str, str, str], list[Point]] = {}
    for point in points.points:
        identity = (point.service, point.instance, point.name, point.labels_key)
        grouped.setdefault(identity, []).append(point)
    written = 0
    locked, series_count = False, 0  # counted once, under the lock, when a series is new
    with transaction.atomic():
        for (service, instance, name, key), group in grouped.items():
            latest = max(group, key=lambda p: p.time_us)
            found = MetricSeries.objects.select_for_update().filter(
                service=service, instance=instance, name=name, labels_key=key
            )
            series = found.first()
            if series is None and not locked:
                _lock_series_creation()
                locked, series_count = True, MetricSeries.objects.count()
                series = found.first()  # another request may have created it meanwhile
            if series is None:
                if series_count >= max_series:
                    points.reject(f"data points of new series beyond {max_series}", len(group))
                    continue
                series = MetricSeries.objects.create(
                    service=service,
                    instance=instance,
                    name=name,
                    labels_key=key,
                    labels=latest.labels,
                    kind=latest.kind,
                    unit=latest.unit,
                    last_value=latest.value,
                    last_us=latest.time_us,
                )
                series_count += 1
            elif latest.time_us >= series.last_us:
                series.last_value, series.last_us = latest.value, latest.time_us
                series.kind, series.unit = latest.kind, latest.unit
                series.save(update_fields=["last_value", "last_us", "kind", "unit"])
            MetricPoint.objects.bulk_create(
                MetricPoint(series=series, time_us=p.time_us, value=p.value) for p in group
            )
            written += len(group)
    return written


def _lock_series_creation() -> None:
    # SQLite: the transaction is IMMEDIATE (one writer at a time) already.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SERIES_LOCK])


def cleanup(*, now: datetime, max_age: Any) -> int:
    """Delete points older than ``now - max_age`` and series with none left; points deleted."""
    cutoff = to_us(now - max_age)
    deleted, _ = MetricPoint.objects.filter(time_us__lt=cutoff).delete()
    MetricSeries.objects.filter(last_us__lt=cutoff).delete()
    return int(deleted)


def cleanup_due(clock: Callable[[], float] = time.monotonic) -> bool:
    """True at most once per minute (per process): whether a write should run cleanup."""
    global _last_cleanup
    with _cleanup_lock:
        now = clock()
        if now - _last_cleanup < _CLEANUP_EVERY:
            return False
        _last_cleanup = now
        return True


class SeriesRow(TypedDict):
    service: str
    instance: str
    name: str
    labels: str
    kind: str
    unit: str
    value: float
    at: datetime


def latest_series(*, limit: int = 200) -> list[SeriesRow]:
    """The most recently updated series, by service and instance, for the metrics page."""
    from dashboard.traces.convert import to_datetime

    rows = MetricSeries.objects.order_by("-last_us")[:limit]
    out = [
        SeriesRow(
            service=row.service,
            instance=row.instance,
            name=row.name,
            labels=", ".join(f"{k}={v}" for k, v in sorted(row.labels.items())),
            kind=row.kind,
            unit=row.unit,
            value=row.last_value,
            at=to_datetime(row.last_us),
        )
        for row in rows
    ]
    return sorted(out, key=lambda r: (r["service"], r["instance"], r["name"], r["labels"]))
