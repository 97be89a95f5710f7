"""Writes for the fleet: take in a worker's report, queue operator commands for workers.

Everything runs in the request's thread: a report that changes something is one UPDATE
of its instance, one INSERT for its transitions, one UPDATE per ack and a SELECT of
the commands waiting for it, in one transaction; a report that changes nothing (the
usual one of an idle worker) is one SELECT, its ``last_seen`` written with the others'
once a second (:class:`.memory.Memory`). Commands are delivered at least once: an unacknowledged
command is repeated in every answer until it is acked or ``command_ttl`` has passed
(the worker applies each id once), so a lost answer costs nothing.

An instance that reports through Redis (``transport == "redis"``) also gets its new
commands *pushed* the moment they are committed (:func:`push_commands`, through the
running :mod:`~dashboard.fleet.redis_link`), instead of waiting for its next report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.db.models import Exists, F
from django.utils import timezone

from dashboard import audit
from dashboard.audit import MAX_REASON
from dashboard.breakers.models import BreakerEvent
from dashboard.breakers.services import PERMISSIONS, Action
from resilience.fleet.protocol import PROTOCOL_VERSION, Command

from . import conf, live
from .memory import digest as report_digest
from .memory import flush_seen, memory
from .models import CommandStatus, FleetCommand, FleetInstance
from .report import ReportIn
from .selectors import LIVE, instance_status

OPEN_STATUSES = (CommandStatus.PENDING, CommandStatus.DELIVERED)


class FleetBreakerNotFound(LookupError):
    pass


class FleetAction(TypedDict):
    batch: str
    name: str
    action: str
    instances: list[str]
    unreachable: list[str]
    shared: bool


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def command_message(command: FleetCommand) -> Command:
    """A command as the protocol sends it."""
    return {
        "id": str(command.pk),
        "kind": "breaker",
        "target": command.target,
        "action": command.action,  # type: ignore[typeddict-item]
        "actor": command.actor or None,
        "reason": command.reason or None,
    }


def answer(commands: Iterable[FleetCommand]) -> dict[str, Any]:
    """The protocol's Answer carrying ``commands``."""
    return {
        "protocol": PROTOCOL_VERSION,
        "commands": [command_message(command) for command in commands],
        "report_interval": conf.report_interval(),
    }


def _open_commands(instance_id: str, now: datetime) -> Any:
    return FleetCommand.objects.filter(
        instance__instance_id=instance_id,
        status__in=OPEN_STATUSES,
        created_at__gte=now - conf.command_ttl(),
    )


def _deliver_waiting(instance_id: str, now: datetime) -> list[FleetCommand]:
    waiting = list(_open_commands(instance_id, now).order_by("created_at"))
    fresh = [command.pk for command in waiting if command.delivered_at is None]
    if fresh:
        FleetCommand.objects.filter(pk__in=fresh, delivered_at__isnull=True).update(
            status=CommandStatus.DELIVERED, delivered_at=now
        )
    return waiting


def _quiet(report: ReportIn, digest: bytes, now: datetime) -> dict[str, Any] | None:
    """The answer to a report that changes nothing (its last_seen batched), or None
    when it must be written in full."""
    info = report.instance
    if report.events or report.acks:
        return None
    with memory.lock:
        last = memory.last.get(info.id)
        if (
            last is None
            or last[0] != digest
            or report.seq != last[1] + 1
            or now - last[2] >= memory.FULL_WRITE_EVERY
        ):
            return None
    # One query: the row still exists (not forgotten, not another database), and
    # whether commands wait for it.
    found = (
        FleetInstance.objects.filter(instance_id=info.id)
        .annotate(waiting=Exists(_open_commands(info.id, now)))
        .values_list("waiting", flat=True)
        .first()
    )
    if found is None:
        return None
    with memory.lock:
        memory.last[info.id] = (digest, report.seq, last[2])
        seen = memory.pending.get(info.id)
        memory.pending[info.id] = (now, (seen[1] if seen else 0) + 1, report.seq)
        memory.skipped += 1
    flush_seen(now=now, force=False)
    return answer(_deliver_waiting(info.id, now) if found else [])


def ingest_report(
    *,
    report: ReportIn,
    now: datetime | None = None,
    transport: Literal["http", "redis"] = "http",
) -> dict[str, Any]:
    """Store ``report`` (announcing its instance if new); returns the answer to send.

    A report that changes nothing is not written (:class:`.memory.Memory`); otherwise one
    UPDATE of the instance (an INSERT for a new one), one INSERT for its transitions,
    one UPDATE per ack, and the SELECT of the commands waiting for it.
    """
    now = now or timezone.now()
    digest = report_digest(report, transport)
    quiet = _quiet(report, digest, now)
    if quiet is not None:
        return quiet
    info = report.instance
    with memory.lock:
        seen = memory.pending.pop(info.id, None)
    fields = {
        "service": info.service,
        "host": info.host,
        "pid": info.pid,
        "version": info.version,
        "language": info.language,
        "started_at": _when(info.started_at),
        "last_seen": now,
        "last_seq": report.seq,
        "reports_failed": report.stats.reports_failed,
        "events_dropped": report.stats.events_dropped,
        "breakers": [item.model_dump(mode="json") for item in report.breakers],
        "limiters": [item.model_dump(mode="json") for item in report.limiters],
        "transport": transport,
    }
    label = f"{info.service}@{info.host}:{info.pid}"
    # One transaction for a report with transitions or acks; a snapshot alone is one
    # UPDATE in autocommit (no BEGIN IMMEDIATE held across the SELECT on SQLite).
    together = transaction.atomic() if report.events or report.acks else nullcontext()
    with together:
        stored = FleetInstance.objects.filter(instance_id=info.id).update(
            reports=F("reports") + 1 + (seen[1] if seen else 0), **fields
        )
        if not stored:
            # A new instance is a process start: the moment to forget long-gone ones.
            _forget(now)
            FleetInstance.objects.create(instance_id=info.id, first_seen=now, reports=1, **fields)
        if report.events:
            BreakerEvent.objects.bulk_create(
                BreakerEvent(
                    breaker=event.name,
                    from_state=event.from_state,
                    to_state=event.to_state,
                    reason=event.reason,
                    failure_count=event.failure_count,
                    failure_rate=event.failure_rate,
                    occurred_at=_when(event.time),
                    process=label[:200],
                    actor=event.actor or "",
                    note=event.note or "",
                )
                for event in report.events
            )
        for ack in report.acks:
            command_id = _uuid(ack.command_id)
            if command_id is None:
                continue
            FleetCommand.objects.filter(
                pk=command_id, instance__instance_id=info.id, status__in=OPEN_STATUSES
            ).update(
                status=CommandStatus.APPLIED if ack.ok else CommandStatus.FAILED,
                acked_at=now,
                result_state=ack.state or "",
                error=(ack.error or "")[:2000],
            )
        waiting = _deliver_waiting(info.id, now)
    with memory.lock:
        if len(memory.last) >= memory.MAX_INSTANCES:
            memory.last.clear()
        memory.last[info.id] = (digest, report.seq, now)
    return answer(waiting)


def _forget(now: datetime) -> None:
    """Delete instances gone for ``forget_after``, and fleet checkpoint owner rows whose
    checkpoint was deleted."""
    from dashboard.checkpoints.models import Checkpoint

    from .models import FleetCheckpoint

    FleetInstance.objects.filter(last_seen__lt=now - conf.forget_after()).delete()
    FleetCheckpoint.objects.exclude(checkpoint_id__in=Checkpoint.objects.values("pk")).delete()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def changed_breakers(report: ReportIn) -> set[str]:
    """The breakers whose cards ``report`` changes: transitions, and acked commands'."""
    names = {event.name for event in report.events}
    ids = [found for ack in report.acks if (found := _uuid(ack.command_id)) is not None]
    if ids:
        names.update(FleetCommand.objects.filter(pk__in=ids).values_list("target", flat=True))
    return names


def take_new_commands(*, instance_id: str, now: datetime | None = None) -> list[FleetCommand]:
    """The commands for ``instance_id`` not yet delivered (within the TTL), now delivered.

    For the HTTP long-poll: a command already delivered is not handed out again here
    (that would spin while its ack is on the way); the answers to reports repeat it.
    """
    now = now or timezone.now()
    pending = FleetCommand.objects.filter(
        instance__instance_id=instance_id,
        status=CommandStatus.PENDING,
        created_at__gte=now - conf.command_ttl(),
    )
    if not pending.exists():
        # The usual answer, without a write transaction (on SQLite every one takes the
        # database's write lock, which reports wait for).
        return []
    with transaction.atomic():
        waiting = list(
            FleetCommand.objects.select_for_update()
            .filter(
                instance__instance_id=instance_id,
                status=CommandStatus.PENDING,
                created_at__gte=now - conf.command_ttl(),
            )
            .order_by("created_at")
        )
        if waiting:
            FleetCommand.objects.filter(pk__in=[command.pk for command in waiting]).update(
                status=CommandStatus.DELIVERED, delivered_at=now
            )
    return waiting


def push_commands(commands: list[FleetCommand], *, now: datetime | None = None) -> int:
    """Push ``commands`` to their Redis instances now (if the Redis link runs); how many.

    Never raises: a command that could not be pushed is still delivered with the
    answer to its instance's next report.
    """
    from . import runtime

    link = runtime.current()
    if link is None or not commands:
        return 0
    by_instance: dict[str, list[FleetCommand]] = {}
    for command in commands:
        by_instance.setdefault(command.instance.instance_id, []).append(command)
    pushed = [
        command
        for instance_id, mine in by_instance.items()
        if link.push(instance_id, answer(mine))
        for command in mine
    ]
    if pushed:
        FleetCommand.objects.filter(
            pk__in=[command.pk for command in pushed], status=CommandStatus.PENDING
        ).update(status=CommandStatus.DELIVERED, delivered_at=now or timezone.now())
    return len(pushed)


def act_on_fleet_breaker(
    *,
    name: str,
    action: Action,
    user: AbstractBaseUser | AnonymousUser | None,
    reason: str = "",
    source: str,
    instance_id: str | None = None,
    now: datetime | None = None,
) -> FleetAction:
    """Queue ``action`` on breaker ``name`` for every live instance that holds it.

    Only instances live now get the command: one that starts later and creates the
    breaker is not reset retroactively. A breaker shared through Redis (its snapshot
    says ``shared`` with a ``redis_key``) is one breaker: one live instance acts on it.
    Stale instances holding the breaker are listed as ``unreachable`` and get nothing.
    ``instance_id`` targets one instance.

    Raises:
        FleetBreakerNotFound: no instance (or not ``instance_id``) holds the breaker.
        ValueError: unknown action or a reason longer than MAX_REASON characters.
    """
    if action not in PERMISSIONS:
        raise ValueError(f"action must be one of {sorted(PERMISSIONS)}, got {action!r}")
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise ValueError(f"reason must be at most {MAX_REASON} characters, got {len(reason)}")
    now = now or timezone.now()
    flush_seen()  # quiet reports' last_seen decides who is live
    holders = FleetInstance.objects.filter(last_seen__gte=now - conf.gone_after())
    if instance_id is not None:
        holders = holders.filter(instance_id=instance_id)
    targets: list[FleetInstance] = []
    unreachable: list[FleetInstance] = []
    shared_keys: set[str] = set()
    for instance in holders.order_by("-last_seen"):
        snap = next((item for item in instance.breakers if item.get("name") == name), None)
        if snap is None:
            continue
        if instance_status(last_seen=instance.last_seen, now=now) != LIVE:
            unreachable.append(instance)
        elif snap.get("shared") is True and isinstance(snap.get("redis_key"), str):
            # One breaker in Redis, held by several instances: acting once acts on all.
            if snap["redis_key"] not in shared_keys:
                shared_keys.add(snap["redis_key"])
                targets.append(instance)
        else:
            targets.append(instance)
    if not targets and not unreachable:
        raise FleetBreakerNotFound(name)
    actor = user.get_username() if isinstance(user, AbstractBaseUser) else "system"
    batch = uuid.uuid4()
    with transaction.atomic():
        created = FleetCommand.objects.bulk_create(
            FleetCommand(
                batch=batch,
                instance=instance,
                target=name,
                action=action,
                actor=actor,
                reason=reason,
                created_at=now,
            )
            for instance in targets
        )
        audit.record(
            user=user,
            source=source,
            action=f"fleet.breaker.{action}",
            target=name,
            reason=reason,
            details={
                "batch": str(batch),
                "instances": [instance.label for instance in targets],
                "unreachable": [instance.label for instance in unreachable],
            },
        )
        pushed = [command for command in created if command.instance.transport == "redis"]
        if pushed:
            transaction.on_commit(lambda: push_commands(pushed))
        polling = [t.instance_id for t in targets if t.transport != "redis"]
        if polling:
            transaction.on_commit(lambda: live.wake(polling))
    return {
        "batch": str(batch),
        "name": name,
        "action": action,
        "instances": [instance.instance_id for instance in targets],
        "unreachable": [instance.instance_id for instance in unreachable],
        "shared": bool(shared_keys),
    }
