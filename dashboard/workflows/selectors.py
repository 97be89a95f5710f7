"""Read-side queries of the workflows app (keyword-only, no side effects)."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import WorkflowRun


def recent_runs(*, limit: int = 50, status: str | None = None) -> list[WorkflowRun]:
    """The latest runs of every workflow, newest first."""
    runs: QuerySet[WorkflowRun] = WorkflowRun.objects.all()
    if status:
        runs = runs.filter(status=status)
    return list(runs.order_by("-started_at", "-id")[:limit])


def workflow_runs(*, workflow_id: str, limit: int = 20) -> list[WorkflowRun]:
    """The latest runs of one workflow, newest first (empty if it never ran)."""
    return list(
        WorkflowRun.objects.filter(workflow_id=workflow_id).order_by("-started_at", "-id")[:limit]
    )
