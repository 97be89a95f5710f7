"""This process's memory of the fleet's reports: what lets a quiet report write nothing.

See :class:`Memory`. Used by :func:`dashboard.fleet.services.ingest_report`; the pages
that show ``last_seen`` call :func:`flush_seen` first.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from .models import FleetInstance
from .report import ReportIn


def digest(report: ReportIn, transport: str) -> bytes:
    """What a report says beyond ``seq``/``sent_at``/events/acks (equal: nothing changed)."""
    body = report.model_dump_json(include={"instance", "breakers", "limiters"})
    extra = f"{transport}/{report.stats.reports_failed}/{report.stats.events_dropped}"
    return hashlib.blake2b(body.encode() + extra.encode(), digest_size=16).digest()


class Memory:
    """This process's memory of each instance's last stored report, and the
    ``last_seen`` of quiet reports not yet written.

    A report that changes nothing but its sequence number (same instance block,
    snapshots and counters as the last one *this process* stored, ``seq`` the next one,
    no events or acks, the last full write under ``FULL_WRITE_EVERY`` ago) writes no
    row: its ``last_seen``, ``reports`` and ``last_seq`` wait here and are written for
    every such instance in one UPDATE at most every ``FLUSH_EVERY`` (and before the
    Instances page or API reads them). A report that another server stored in between
    breaks the ``seq`` chain, so this process never skips over a newer row.

    Guarded by a lock: request threads and the Redis link's thread share it.
    """

    FLUSH_EVERY = timedelta(seconds=1)
    FULL_WRITE_EVERY = timedelta(seconds=60)
    MAX_INSTANCES = 10_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, tuple[bytes, int, datetime]] = {}  # id -> digest, seq, written
        self.pending: dict[str, tuple[datetime, int, int]] = {}  # id -> seen, reports, seq
        self.flushed_at: datetime | None = None
        self.skipped = 0

    def clear(self) -> None:
        with self.lock:
            self.last.clear()
            self.pending.clear()
            self.flushed_at = None


memory = Memory()


def flush_seen(*, now: datetime | None = None, force: bool = True) -> int:
    """Write the ``last_seen`` of quiet reports (all instances, one UPDATE); how many.

    ``force=False`` writes only once ``FLUSH_EVERY`` has passed since the last flush.
    """
    now = now or timezone.now()
    with memory.lock:
        if memory.flushed_at is None:
            memory.flushed_at = now  # the first quiet report starts the clock
        due = force or now - memory.flushed_at >= memory.FLUSH_EVERY
        if not due or not memory.pending:
            return 0
        pending, memory.pending = memory.pending, {}
        memory.flushed_at = now

    def case(index: int, field: str, output: models.Field[Any, Any]) -> Case:
        return Case(
            *(
                When(
                    instance_id=key,
                    then=Greatest(F(field), Value(row[index]), output_field=output),
                )
                for key, row in pending.items()
            ),
            default=F(field),
            output_field=output,
        )

    reports = Case(
        *(When(instance_id=key, then=Value(row[1])) for key, row in pending.items()),
        default=Value(0),
        output_field=models.PositiveBigIntegerField(),
    )
    written = FleetInstance.objects.filter(instance_id__in=list(pending)).update(
        last_seen=case(0, "last_seen", models.DateTimeField()),
        reports=F("reports") + reports,
        last_seq=case(2, "last_seq", models.PositiveBigIntegerField()),
    )
    if written != len(pending):  # rows deleted meanwhile: their next report writes them
        with memory.lock:
            for key in pending:
                memory.last.pop(key, None)
    return written
