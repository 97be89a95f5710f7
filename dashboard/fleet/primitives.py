"""Fleet primitives one row per (instance, name), and their totals: what alerts,
``/metrics`` and the charts' fleet series read (``selectors`` groups them for pages)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from django.utils import timezone

from . import conf
from .models import FleetInstance
from .selectors import GONE, as_count, flush_seen, instance_status


class FleetPrimitive(TypedDict):
    """One breaker or limiter snapshot on one instance not gone (for alerts, /metrics, charts)."""

    name: str
    instance: str
    label: str
    service: str
    status: str
    snapshot: dict[str, Any]


def _primitives(kind: str, now: datetime | None) -> list[FleetPrimitive]:
    flush_seen()
    now = now or timezone.now()
    stale, gone = conf.stale_after(), conf.gone_after()
    rows: list[FleetPrimitive] = []
    for holder in FleetInstance.objects.filter(last_seen__gt=now - gone).order_by("instance_id"):
        status = instance_status(
            last_seen=holder.last_seen, now=now, stale_after=stale, gone_after=gone
        )
        if status == GONE:
            continue
        for snap in getattr(holder, kind):
            name = snap.get("name") if isinstance(snap, dict) else None
            if isinstance(name, str) and name:
                rows.append(
                    {
                        "name": name,
                        "instance": holder.instance_id,
                        "label": holder.label,
                        "service": holder.service,
                        "status": status,
                        "snapshot": snap,
                    }
                )
    return rows


def fleet_breakers(*, now: datetime | None = None) -> list[FleetPrimitive]:
    """Every breaker snapshot of every instance not gone, one row per (instance, name)."""
    return _primitives("breakers", now)


def fleet_limiters(*, now: datetime | None = None) -> list[FleetPrimitive]:
    """Every limiter snapshot of every instance not gone, one row per (instance, name)."""
    return _primitives("limiters", now)


class FleetTotals(TypedDict):
    instances: int
    breakers: int
    calls: int
    failures: int
    breaker_rejected: int
    limiter_allowed: int
    limiter_rejected: int


def totals(*, now: datetime | None = None) -> FleetTotals:
    """Counters summed over the instances not gone, for the charts' fleet series."""
    breakers, limiters = fleet_breakers(now=now), fleet_limiters(now=now)
    result: FleetTotals = {
        "instances": len({row["instance"] for row in breakers + limiters}),
        "breakers": len(breakers),
        "calls": 0,
        "failures": 0,
        "breaker_rejected": 0,
        "limiter_allowed": 0,
        "limiter_rejected": 0,
    }
    for row in breakers:
        calls = row["snapshot"].get("calls") or {}
        result["calls"] += as_count(calls.get("successful")) + as_count(calls.get("failed"))
        result["failures"] += as_count(calls.get("failed"))
        result["breaker_rejected"] += as_count(calls.get("rejected"))
    for row in limiters:
        result["limiter_allowed"] += as_count(row["snapshot"].get("allowed"))
        result["limiter_rejected"] += as_count(row["snapshot"].get("rejected"))
    return result
