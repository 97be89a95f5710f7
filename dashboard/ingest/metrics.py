"""OTLP metrics → a small series store: one row per (service, instance, metric, labels),
its points, and retention.

Gauges and sums store their values (``kind`` gauge, counter for monotonic sums, sum
otherwise); histograms, exponential histograms and summaries store ``<name>_count``
and ``<name>_sum`` (as Prometheus names them). Labels are the data point's attributes,
masked and capped like span attributes. Points without a time or with a non-finite
value, and points beyond ``max_points`` per request, are rejected (counted in the
answer's ``partial_success``).

Writes happen in the request, in one transaction (metrics arrive far less often than
spans: a worker exports every few seconds). Points older than TRACES_MAX_AGE are
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
from django.db import transaction
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics

from dashboard.traces.convert import to_us

from .models import MetricPoint, MetricSeries
from .spans import UNKNOWN_SERVICE, AttributeValues, CachingMasker, Limits, clean_text

_NAME_LENGTH = 255
_CLEANUP_EVERY = 60.0  # seconds
_cleanup_lock = threading.Lock()
_last_cleanup = -math.inf


@dataclass(frozen=True, slots=True)
class Point:
    service: str
    instance: str
    name: str
    labels: dict[str, Any]
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
                    if not point.time_unix_nano:
                        result.reject("data points without timeUnixNano")
                    elif not math.isfinite(value):
                        result.reject("data points with a non-finite value")
                    elif not name:
                        result.reject("metrics without a name")
                    else:
                        result.points.append(
                            Point(
                                service=service[:_NAME_LENGTH],
                                instance=instance,
                                name=clean_text(name, _NAME_LENGTH),
                                labels=values.attributes(point.attributes),
                                kind=kind,
                                unit=unit,
                                time_us=point.time_unix_nano // 1000,
                                value=value,
                            )
                        )
    return result


def labels_key(labels: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()


def store(points: Iterable[Point]) -> int:
    """Write ``points`` (creating their series), in one transaction; returns points written."""
    grouped: dict[tuple[str, str, str, str], list[Point]] = {}
    for point in points:
        identity = (point.service, point.instance, point.name, labels_key(point.labels))
        grouped.setdefault(identity, []).append(point)
    written = 0
    with transaction.atomic():
        for (service, instance, name, key), group in grouped.items():
            latest = max(group, key=lambda p: p.time_us)
            series, created = MetricSeries.objects.select_for_update().get_or_create(
                service=service,
                instance=instance,
                name=name,
                labels_key=key,
                defaults={
                    "labels": latest.labels,
                    "kind": latest.kind,
                    "unit": latest.unit,
                    "last_value": latest.value,
                    "last_us": latest.time_us,
                },
            )
            if not created and latest.time_us >= series.last_us:
                series.last_value, series.last_us = latest.value, latest.time_us
                series.kind, series.unit = latest.kind, latest.unit
                series.save(update_fields=["last_value", "last_us", "kind", "unit"])
            MetricPoint.objects.bulk_create(
                MetricPoint(series=series, time_us=p.time_us, value=p.value) for p in group
            )
            written += len(group)
    return written


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
