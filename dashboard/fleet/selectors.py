"""Reads for the fleet: instance liveness, and breakers grouped by name across instances.

``now`` is a parameter everywhere (default: the current time) so that liveness is
tested with an injected clock instead of sleeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db import connections, router
from django.utils import timezone

from resilience.circuit_breaker import CircuitState

from . import conf
from .models import CommandStatus, FleetCommand, FleetInstance

LIVE, STALE, GONE = "live", "stale", "gone"
# Worst first: any instance OPEN shows the group as OPEN.
STATE_RANK = {
    state.value: rank
    for rank, state in enumerate(
        (
            CircuitState.OPEN,
            CircuitState.FORCED_OPEN,
            CircuitState.HALF_OPEN,
            CircuitState.DISABLED,
            CircuitState.CLOSED,
        )
    )
}
UNREACHABLE = "unreachable"


class InstanceRow(TypedDict):
    id: str
    service: str
    host: str
    pid: int
    label: str
    version: str
    language: str
    status: str
    started_at: datetime
    last_seen: datetime
    uptime_seconds: float
    seconds_since_report: float
    reports: int
    reports_failed: int
    events_dropped: int
    breakers: int
    limiters: int
    transport: str


class InstanceBreaker(TypedDict):
    instance: str
    label: str
    service: str
    status: str
    state: str
    failure_count: int
    calls: dict[str, int]
    command: dict[str, Any] | None


class BreakerGroup(TypedDict):
    name: str
    dom_id: str
    state: str
    instances: list[InstanceBreaker]
    live_instances: int
    calls: int
    failures: int
    rejections: int
    state_counts: dict[str, int]


def instance_status(
    *,
    last_seen: datetime,
    now: datetime,
    stale_after: timedelta | None = None,
    gone_after: timedelta | None = None,
) -> str:
    """``live``, ``stale`` (missed reports) or ``gone``, from the time of the last report."""
    silent = now - last_seen
    if silent >= (gone_after if gone_after is not None else conf.gone_after()):
        return GONE
    if silent >= (stale_after if stale_after is not None else conf.stale_after()):
        return STALE
    return LIVE


def _row(instance: FleetInstance, now: datetime, stale: timedelta, gone: timedelta) -> InstanceRow:
    return {
        "id": instance.instance_id,
        "service": instance.service,
        "host": instance.host,
        "pid": instance.pid,
        "label": instance.label,
        "version": instance.version,
        "language": instance.language,
        "status": instance_status(
            last_seen=instance.last_seen, now=now, stale_after=stale, gone_after=gone
        ),
        "started_at": instance.started_at,
        "last_seen": instance.last_seen,
        "uptime_seconds": max((now - instance.started_at).total_seconds(), 0.0),
        "seconds_since_report": max((now - instance.last_seen).total_seconds(), 0.0),
        "reports": instance.reports,
        "reports_failed": instance.reports_failed,
        "events_dropped": instance.events_dropped,
        "breakers": len(instance.breakers),
        "limiters": len(instance.limiters),
        "transport": instance.transport,
    }


def instances(
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
    gone_after: timedelta | None = None,
    service: str | None = None,
) -> list[InstanceRow]:
    """Every known instance with its status, live ones first, then by service."""
    flush_seen()
    now = now or timezone.now()
    stale = stale_after if stale_after is not None else conf.stale_after()
    gone = gone_after if gone_after is not None else conf.gone_after()
    found = FleetInstance.objects.all()
    if service:
        found = found.filter(service=service)
    rows = [_row(instance, now, stale, gone) for instance in found]
    order = {LIVE: 0, STALE: 1, GONE: 2}
    return sorted(rows, key=lambda r: (order[r["status"]], r["service"], r["host"], r["pid"]))


def flush_seen() -> None:
    # Quiet reports' last_seen waits in memory (services._Memory): these pages show it.
    from .memory import flush_seen

    flush_seen()


def instance(*, instance_id: str, now: datetime | None = None) -> InstanceRow | None:
    flush_seen()
    found = FleetInstance.objects.filter(instance_id=instance_id).first()
    if found is None:
        return None
    return _row(found, now or timezone.now(), conf.stale_after(), conf.gone_after())


def command_view(command: FleetCommand, *, live: bool, now: datetime) -> dict[str, Any]:
    """A command as the UI shows it: applied, failed, pending or unreachable."""
    status = command.status
    if status in (CommandStatus.PENDING, CommandStatus.DELIVERED) and (
        not live or now - command.created_at >= conf.command_ttl()
    ):
        status = UNREACHABLE
    elif status == CommandStatus.DELIVERED:
        status = CommandStatus.PENDING
    return {
        "id": str(command.pk),
        "batch": str(command.batch),
        "action": command.action,
        "status": str(status),
        "actor": command.actor,
        "reason": command.reason,
        "created_at": command.created_at,
        "acked_at": command.acked_at,
        "result_state": command.result_state,
        "error": command.error,
    }


def _latest_commands(
    instance_ids: list[int], names: Collection[str] | None = None
) -> dict[tuple[int, str], FleetCommand]:
    latest: dict[tuple[int, str], FleetCommand] = {}
    if not instance_ids:
        return latest
    recent = FleetCommand.objects.filter(instance_id__in=instance_ids).order_by("-created_at")
    if names is not None:
        recent = recent.filter(target__in=list(names))
    for command in recent[:5000]:
        latest.setdefault((command.instance_id, command.target), command)
    return latest


def dom_id(name: str) -> str:
    """The HTML id of a breaker group's card (any name becomes a valid, stable id)."""
    return "fleet-group-" + hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:16]


_seen_since_sql: dict[str, str] = {}


def _seen_since(threshold: datetime) -> list[FleetInstance]:
    """``FleetInstance.objects.filter(last_seen__gt=threshold).defer("limiters")`` (the
    limiters' JSON is not decoded), in the model's order, with its SQL compiled once per
    database: the ORM's compile of it was most of a ``/circuit-breakers`` read's own CPU
    (about 0.25 ms of 0.35)."""
    connection = connections[router.db_for_read(FleetInstance)]
    key = f"{connection.alias}/{connection.vendor}"
    sql = _seen_since_sql.get(key)
    if sql is None:
        query = FleetInstance.objects.using(connection.alias).filter(last_seen__gt=threshold)
        sql = _seen_since_sql[key] = query.defer("limiters").query.sql_with_params()[0]
    last_seen = FleetInstance._meta.get_field("last_seen")
    param = last_seen.get_db_prep_value(threshold, connection)
    return list(FleetInstance.objects.raw(sql, [param]).using(connection.alias))


def breaker_groups(
    *,
    now: datetime | None = None,
    stale_after: timedelta | None = None,
    gone_after: timedelta | None = None,
    name: str | None = None,
    names: Collection[str] | None = None,
) -> list[BreakerGroup]:
    """Breakers of every instance not gone, grouped by name, worst state first.

    ``name`` (or ``names``) keeps only those groups.

    Each group has the per-instance breakdown (with the latest command for that
    breaker on that instance), and calls, failures and rejections summed.
    """
    flush_seen()  # live or stale is read from last_seen
    now = now or timezone.now()
    stale = stale_after if stale_after is not None else conf.stale_after()
    gone = gone_after if gone_after is not None else conf.gone_after()
    holders = [
        item
        for item in _seen_since(now - gone)
        if instance_status(last_seen=item.last_seen, now=now, stale_after=stale, gone_after=gone)
        != GONE
    ]
    wanted = [name] if name is not None else names
    commands = _latest_commands([item.pk for item in holders], wanted)
    groups: dict[str, BreakerGroup] = {}
    for holder in holders:
        status = instance_status(
            last_seen=holder.last_seen, now=now, stale_after=stale, gone_after=gone
        )
        for snap in holder.breakers:
            breaker = str(snap.get("name", ""))
            if not breaker or (name is not None and breaker != name):
                continue
            if names is not None and breaker not in names:
                continue
            calls = {k: int(v) for k, v in (snap.get("calls") or {}).items() if isinstance(v, int)}
            command = commands.get((holder.pk, breaker))
            state = str(snap.get("state", CircuitState.CLOSED.value))
            group = groups.setdefault(
                breaker,
                {
                    "name": breaker,
                    "dom_id": dom_id(breaker),
                    "state": CircuitState.CLOSED.value,
                    "instances": [],
                    "live_instances": 0,
                    "calls": 0,
                    "failures": 0,
                    "rejections": 0,
                    "state_counts": {},
                },
            )
            group["instances"].append(
                {
                    "instance": holder.instance_id,
                    "label": holder.label,
                    "service": holder.service,
                    "status": status,
                    "state": state,
                    "failure_count": int(snap.get("failure_count") or 0),
                    "calls": calls,
                    "command": None
                    if command is None
                    else command_view(command, live=status == LIVE, now=now),
                }
            )
            group["live_instances"] += status == LIVE
            group["calls"] += sum(calls.get(k, 0) for k in ("successful", "failed", "rejected"))
            group["failures"] += calls.get("failed", 0)
            group["rejections"] += calls.get("rejected", 0)
            group["state_counts"][state] = group["state_counts"].get(state, 0) + 1
            if STATE_RANK.get(state, 9) < STATE_RANK.get(group["state"], 9):
                group["state"] = state
    for group in groups.values():
        group["instances"].sort(key=lambda row: (STATE_RANK.get(row["state"], 9), row["label"]))
    return sorted(groups.values(), key=lambda g: (STATE_RANK.get(g["state"], 9), g["name"]))


class InstanceLimiter(TypedDict):
    instance: str
    label: str
    service: str
    status: str
    allowed: int
    rejected: int
    available_tokens: float | None


class LimiterGroup(TypedDict):
    name: str
    instances: list[InstanceLimiter]
    allowed: int
    rejected: int


def as_count(value: Any) -> int:
    """An int counter from a snapshot; anything else (bool, missing, text) counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def limiter_groups(*, now: datetime | None = None) -> list[LimiterGroup]:
    """Rate limiters of every instance not gone, grouped by name, most rejections first."""
    flush_seen()
    now = now or timezone.now()
    groups: dict[str, LimiterGroup] = {}
    for holder in FleetInstance.objects.filter(last_seen__gt=now - conf.gone_after()):
        status = instance_status(last_seen=holder.last_seen, now=now)
        if status == GONE:
            continue
        for snap in holder.limiters:
            tokens = snap.get("available_tokens")
            row: InstanceLimiter = {
                "instance": holder.instance_id,
                "label": holder.label,
                "service": holder.service,
                "status": status,
                "allowed": as_count(snap.get("allowed")),
                "rejected": as_count(snap.get("rejected")),
                "available_tokens": float(tokens)
                if isinstance(tokens, int | float) and not isinstance(tokens, bool)
                else None,
            }
            name = str(snap.get("name", ""))
            group = groups.setdefault(
                name, {"name": name, "instances": [], "allowed": 0, "rejected": 0}
            )
            group["instances"].append(row)
            group["allowed"] += row["allowed"]
            group["rejected"] += row["rejected"]
    return sorted(groups.values(), key=lambda g: (-g["rejected"], g["name"]))


def batch_commands(*, batch: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every command of one operator action, per instance."""
    now = now or timezone.now()
    rows = []
    for command in FleetCommand.objects.filter(batch=batch).select_related("instance"):
        live = instance_status(last_seen=command.instance.last_seen, now=now) == LIVE
        rows.append(
            {
                **command_view(command, live=live, now=now),
                "instance": command.instance.instance_id,
                "label": command.instance.label,
            }
        )
    return rows
