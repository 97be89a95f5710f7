"""Checkpoint retention: the configured policy, applied periodically in the server.

Policy (settings): ``CHECKPOINT_KEEP_LAST`` keeps the newest N checkpoints of every
(agent, workflow) group; ``CHECKPOINT_MAX_AGE`` removes checkpoints older than that. A
checkpoint goes when either rule says so, except the newest checkpoint of a workflow
that is still running (its newest checkpoint's ``metadata.status`` is ``"running"``,
or the workflow engine of this process runs it): that one is what a resume needs.

Concurrency model: one daemon thread (``checkpoints-retention``, a
:class:`dashboard.periodic.PeriodicThread`) wakes every ``CHECKPOINT_CLEANUP_INTERVAL``
seconds and calls :func:`enforce`; ``manage.py
checkpoints cleanup`` (no rule given) calls it from cron. The ``status`` (last run,
what it removed) is replaced as a whole under a lock; readers (the admin, /metrics)
take a reference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Max
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dashboard.periodic import PeriodicThread
from resilience._validate import positive

from .forms import parse_duration
from .models import Checkpoint

logger = logging.getLogger(__name__)

_CHUNK = 500
RUNNING = "running"


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What retention keeps; a rule that is None is off."""

    keep_last: int | None
    max_age: timedelta | None
    interval: float

    @property
    def active(self) -> bool:
        return self.keep_last is not None or self.max_age is not None

    def describe(self) -> str:
        rules = []
        if self.keep_last is not None:
            rules.append(f"keep the newest {self.keep_last} per agent and workflow")
        if self.max_age is not None:
            rules.append(f"delete after {_age(self.max_age)}")
        if not rules:
            return "off"
        return "; ".join(rules) + f" (every {self.interval:g}s)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """The outcome of one run."""

    finished_at: float  # epoch seconds
    deleted: int
    protected: int
    error: str = ""


def policy() -> Policy:
    """The policy from settings (CHECKPOINT_KEEP_LAST, _MAX_AGE, _CLEANUP_INTERVAL).

    Raises:
        ValueError: a setting that is not a whole number >= 0 or a duration.
    """
    keep = int(getattr(settings, "CHECKPOINT_KEEP_LAST", 0) or 0)
    if keep < 0:
        raise ValueError(f"CHECKPOINT_KEEP_LAST must be >= 0, got {keep!r}")
    age_text = str(getattr(settings, "CHECKPOINT_MAX_AGE", "") or "").strip()
    max_age = None if age_text in ("", "0") else parse_duration(age_text)
    interval = positive(
        "CHECKPOINT_CLEANUP_INTERVAL", float(getattr(settings, "CHECKPOINT_CLEANUP_INTERVAL", 60))
    )
    return Policy(keep_last=keep or None, max_age=max_age, interval=interval)


def plan(rules: Policy) -> tuple[list[str], int]:
    """The ids the policy removes now, and how many were spared as running workflows'."""
    from .store import get_manager

    manager = get_manager()
    doomed: dict[str, None] = {}
    if rules.keep_last is not None:
        result = manager.cleanup(keep_last=rules.keep_last, dry_run=True)
        doomed.update(dict.fromkeys(result.checkpoint_ids))
    if rules.max_age is not None:
        # By age straight from the records: the manager's cleanup always keeps the newest
        # checkpoint of each agent and workflow (so a clock step cannot lose it), but the
        # age rule must retire finished workflows whole, or the demo grows by one row per
        # workflow forever. Running workflows are spared below.
        age = rules.max_age
        seconds = age.total_seconds() if isinstance(age, timedelta) else float(age)
        old = Checkpoint.objects.filter(created_ts__lt=time.time() - seconds)
        doomed.update(dict.fromkeys(old.values_list("checkpoint_id", flat=True)))
    protected = set(_newest_of_running(doomed))
    return [checkpoint_id for checkpoint_id in doomed if checkpoint_id not in protected], len(
        protected
    )


def _newest_of_running(ids: Iterable[str]) -> Iterator[str]:
    """Among ``ids``, the newest checkpoint of each workflow that is still running."""
    id_list = list(ids)
    workflows: set[str] = set()
    for start in range(0, len(id_list), _CHUNK):
        workflows.update(
            Checkpoint.objects.filter(pk__in=id_list[start : start + _CHUNK]).values_list(
                "workflow_id", flat=True
            )
        )
    engine_running = _engine_running()
    wanted = set(id_list)
    names = sorted(workflows)
    for start in range(0, len(names), _CHUNK):
        newest = (
            Checkpoint.objects.filter(workflow_id__in=names[start : start + _CHUNK])
            .values("workflow_id")
            .annotate(newest=Max("checkpoint_id"))
        )
        by_id = {row["newest"]: row["workflow_id"] for row in newest}
        rows = Checkpoint.objects.filter(pk__in=list(by_id)).values_list("pk", "metadata")
        for checkpoint_id, metadata in rows:
            status = metadata.get("status") if isinstance(metadata, dict) else None
            if checkpoint_id in wanted and (
                status == RUNNING or by_id[checkpoint_id] in engine_running
            ):
                yield checkpoint_id


def _engine_running() -> set[str]:
    try:
        from dashboard.workflows.engine import running_workflow_ids
    except ImportError:  # pragma: no cover - the workflows app is part of the project
        return set()
    return running_workflow_ids()


def enforce(rules: Policy | None = None, *, source: str = "command") -> Status:
    """Apply the policy once: delete what it removes (audited), record the status."""
    from . import services

    rules = policy() if rules is None else rules
    deleted = protected = 0
    if rules.active:
        ids, protected = plan(rules)
        if ids:
            deleted = services.delete_checkpoints(
                checkpoint_ids=ids, reason=f"retention: {rules.describe()}", source=source
            )
    status = Status(finished_at=time.time(), deleted=deleted, protected=protected)
    worker.record(status)
    return status


class RetentionWorker:
    """Runs :func:`enforce` every ``policy.interval`` seconds on a daemon thread
    (:class:`dashboard.periodic.PeriodicThread`)."""

    def __init__(self, enforce_once: Callable[[], Status] | None = None) -> None:
        self._enforce = enforce_once or (lambda: enforce(source="dashboard"))
        self._lock = threading.Lock()
        self._periodic: PeriodicThread | None = None
        self.status: Status | None = None
        self.runs = 0
        self.errors = 0
        self.deleted_total = 0

    def record(self, status: Status) -> None:
        with self._lock:
            self.status = status
            self.runs += 1
            self.deleted_total += status.deleted

    def start(self, interval: float) -> bool:
        """Start the thread unless it runs already; True if this call started it."""
        with self._lock:
            periodic = self._periodic
            if periodic is None or (not periodic.running and periodic.interval != interval):
                periodic = self._periodic = PeriodicThread(
                    self.run_once,
                    interval=interval,
                    name="checkpoints-retention",
                    what="checkpoint retention run",
                )
        return periodic.start()

    @property
    def running(self) -> bool:
        periodic = self._periodic
        return periodic is not None and periodic.running

    def stop(self, timeout: float = 5.0) -> None:
        periodic = self._periodic
        if periodic is not None:
            periodic.stop(timeout)

    def run_once(self) -> Status:
        """One run now, on the calling thread; a failure is recorded in ``status`` and
        ``errors``, then raised (the thread logs it and goes on)."""
        close_old_connections()
        try:
            status = self._enforce()
        except Exception as exc:
            with self._lock:
                self.errors += 1
                self.status = Status(
                    finished_at=time.time(), deleted=0, protected=0, error=repr(exc)
                )
            raise
        finally:
            close_old_connections()
        if status.deleted:
            logger.info("checkpoint retention removed %d checkpoints", status.deleted)
        return status


worker = RetentionWorker()


def metric_families() -> Iterator[Metric]:
    """``resilience_checkpoint_retention_*`` for /metrics."""
    deleted = CounterMetricFamily(
        "resilience_checkpoint_retention_deleted",
        "Checkpoints deleted by the retention policy in this process",
    )
    deleted.add_metric([], worker.deleted_total)
    yield deleted
    status = worker.status
    if status is not None:
        last = GaugeMetricFamily(
            "resilience_checkpoint_retention_last_run_timestamp_seconds",
            "When the retention policy last ran (epoch seconds)",
        )
        last.add_metric([], status.finished_at)
        yield last


def _age(value: timedelta) -> str:
    from dashboard.durations import format_duration

    return str(format_duration(value))


def admin_context() -> dict[str, Any]:
    """The policy and the last run, for the checkpoint admin's changelist."""
    try:
        rules = policy()
        text = rules.describe()
    except ValueError as exc:
        text = f"misconfigured: {exc}"
    status = worker.status
    last = None if status is None else datetime.fromtimestamp(status.finished_at, UTC)
    return {"retention_policy": text, "retention_status": status, "retention_last_run": last}
