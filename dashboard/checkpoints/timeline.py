"""Reads for checkpoint time travel: a workflow's timeline, its lineage, states, diffs.

A page of the timeline costs a handful of indexed queries whatever the workflow's
size (the count and the page read ``checkpoint_group_recent``/``checkpoint_wf_recent``,
the agents ``checkpoint_wf_agent``); blobs are not read to render it. Whether each
checkpoint verifies is asked separately (:func:`verify_ids`), a page at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Q

from dashboard.workflows.models import WorkflowRun
from resilience.checkpoint import CHECKPOINT_ID_PATTERN

from . import selectors
from .models import Checkpoint, CheckpointFork
from .selectors import Status
from .statediff import StateDiff, diff_states

PER_PAGE = 50
MAX_VERIFY_IDS = 100
DIFF_MAX_BYTES = 8 * 1024 * 1024
"""States larger than this (raw JSON) are not decoded for a diff."""


@dataclass(frozen=True, slots=True)
class TimelineRow:
    checkpoint: Checkpoint
    step: Any
    status: str
    run: WorkflowRun | None
    trace_id: str
    forks: list[CheckpointFork] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lineage:
    """``parent``: how this workflow was forked (None if not a fork); ``children``: its forks."""

    parent: CheckpointFork | None
    children: list[CheckpointFork]


@dataclass(frozen=True, slots=True)
class Timeline:
    workflow_id: str
    agent_id: str | None
    agents: list[str]
    page: Page[Checkpoint]
    rows: list[TimelineRow]
    lineage: Lineage
    newest_first: bool


def agents_of(*, workflow_id: str) -> list[str]:
    return sorted(
        Checkpoint.objects.filter(workflow_id=workflow_id)
        .order_by()
        .values_list("agent_id", flat=True)
        .distinct()
    )


def lineage(*, workflow_id: str) -> Lineage:
    return Lineage(
        parent=CheckpointFork.objects.filter(workflow_id=workflow_id).first(),
        children=list(CheckpointFork.objects.filter(parent_workflow_id=workflow_id)[:200]),
    )


def _runs_for(rows: list[Checkpoint], workflow_id: str) -> dict[str, WorkflowRun]:
    """The run that wrote each checkpoint: by the run id the engine stores in its
    metadata, else (older checkpoints) the run of this workflow active at its time."""
    by_id: dict[int, list[Checkpoint]] = {}
    unknown: list[Checkpoint] = []
    for row in rows:
        run_id = row.metadata.get("run_id") if isinstance(row.metadata, dict) else None
        if isinstance(run_id, int) and not isinstance(run_id, bool):
            by_id.setdefault(run_id, []).append(row)
        elif not (isinstance(row.metadata, dict) and row.metadata.get("forked_from")):
            unknown.append(row)
    found: dict[str, WorkflowRun] = {}
    for run in WorkflowRun.objects.filter(pk__in=list(by_id), workflow_id=workflow_id):
        for row in by_id[run.pk]:
            found[row.checkpoint_id] = run
    if unknown:
        start = min(row.created_at for row in unknown)
        end = max(row.created_at for row in unknown)
        runs = list(
            WorkflowRun.objects.filter(workflow_id=workflow_id, started_at__lte=end)
            .filter(Q(finished_at__gte=start) | Q(finished_at__isnull=True))
            .order_by("-started_at")[:500]
        )
        for row in unknown:
            for run in runs:
                if run.started_at <= row.created_at and (
                    run.finished_at is None or row.created_at <= run.finished_at
                ):
                    found[row.checkpoint_id] = run
                    break
    return found


def timeline(
    *,
    workflow_id: str,
    agent_id: str | None = None,
    page: int | str = 1,
    per_page: int = PER_PAGE,
    newest_first: bool = True,
) -> Timeline:
    """One page of ``workflow_id``'s checkpoints (of ``agent_id`` when given)."""
    rows = Checkpoint.objects.filter(workflow_id=workflow_id)
    if agent_id:
        rows = rows.filter(agent_id=agent_id)
    rows = rows.order_by("-checkpoint_id" if newest_first else "checkpoint_id")
    current = Paginator(rows, per_page).get_page(page)
    checkpoints = list(current.object_list)
    runs = _runs_for(checkpoints, workflow_id)
    forks: dict[str, list[CheckpointFork]] = {}
    for fork in CheckpointFork.objects.filter(
        parent_checkpoint_id__in=[row.checkpoint_id for row in checkpoints]
    ):
        forks.setdefault(fork.parent_checkpoint_id, []).append(fork)
    timeline_rows = []
    for row in checkpoints:
        meta = row.metadata if isinstance(row.metadata, dict) else {}
        run = runs.get(row.checkpoint_id)
        trace_id = run.trace_id if run is not None else str(meta.get("trace_id") or "")
        timeline_rows.append(
            TimelineRow(
                checkpoint=row,
                step=meta.get("step", ""),
                status=str(meta.get("status", "")),
                run=run,
                trace_id=trace_id,
                forks=forks.get(row.checkpoint_id, []),
            )
        )
    return Timeline(
        workflow_id=workflow_id,
        agent_id=agent_id or None,
        agents=agents_of(workflow_id=workflow_id),
        page=current,
        rows=timeline_rows,
        lineage=lineage(workflow_id=workflow_id),
        newest_first=newest_first,
    )


def verify_ids(*, checkpoint_ids: Iterable[str]) -> list[tuple[str, Status]]:
    """(id, ``ok``/``corrupted``/``missing``) for at most MAX_VERIFY_IDS well-formed ids."""
    ids = [i for i in checkpoint_ids if CHECKPOINT_ID_PATTERN.fullmatch(i)][:MAX_VERIFY_IDS]
    return list(selectors.verify_many(checkpoint_ids=ids))


@dataclass(frozen=True, slots=True)
class Comparison:
    a: Checkpoint
    b: Checkpoint
    state_a: Any
    state_b: Any
    diff: StateDiff


class NotComparable(ValueError):
    """The two checkpoints cannot be compared (another workflow, too large)."""


def compare(*, a: Checkpoint, b: Checkpoint) -> Comparison:
    """Diff two checkpoints of one workflow; both blobs are verified before decoding.

    Raises:
        NotComparable: different workflows, or a state over DIFF_MAX_BYTES.
        CheckpointNotFoundError / CheckpointCorruptedError: a blob is missing or bad.
    """
    if a.workflow_id != b.workflow_id:
        raise NotComparable(
            f"{a.checkpoint_id} is of workflow {a.workflow_id!r} and {b.checkpoint_id} of "
            f"{b.workflow_id!r}: compare checkpoints of one workflow"
        )
    for row in (a, b):
        if row.raw_size > DIFF_MAX_BYTES:
            raise NotComparable(
                f"{row.checkpoint_id} holds {row.raw_size:,} bytes of JSON, over the "
                f"{DIFF_MAX_BYTES:,} bytes a diff decodes; download both instead"
            )
    state_a = selectors.load_state(checkpoint_id=a.checkpoint_id)
    state_b = selectors.load_state(checkpoint_id=b.checkpoint_id)
    return Comparison(
        a=a, b=b, state_a=state_a, state_b=state_b, diff=diff_states(state_a, state_b)
    )
