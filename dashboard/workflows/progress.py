"""Store each execution's progress as a WorkflowRun row (the write side)."""

from __future__ import annotations

from django.utils import timezone

from dashboard import runtime

from .definition import Run
from .models import RunStatus, WorkflowRun


class RunRecorder:
    """A :class:`~dashboard.workflows.engine.Progress` writing WorkflowRun rows.

    Runs of the same workflow still marked ``running`` when a new one starts belong to
    a process that died (the engine never runs a workflow twice at once in a process):
    they are marked ``interrupted``.
    """

    def started(self, run: Run) -> None:
        now = timezone.now()
        WorkflowRun.objects.filter(workflow_id=run.workflow_id, status=RunStatus.RUNNING).update(
            status=RunStatus.INTERRUPTED, updated_at=now, error="the serving process died"
        )
        row = WorkflowRun.objects.create(
            workflow_id=run.workflow_id,
            caller=run.caller[:150],
            status=RunStatus.RUNNING,
            step=run.step,
            total_steps=run.total_steps,
            start_step=run.start_step,
            resumed_from=run.resumed_from or "",
            last_checkpoint_id=run.last_checkpoint_id or "",
            trace_id=run.trace_id,
            process=runtime.identity().process,
            started_at=now,
            updated_at=now,
        )
        run.run_id = row.pk

    def step_done(self, run: Run) -> None:
        if run.run_id is None:
            return
        WorkflowRun.objects.filter(pk=run.run_id).update(
            step=run.step,
            agent=run.agent,
            last_checkpoint_id=run.last_checkpoint_id or "",
            updated_at=timezone.now(),
        )

    def finished(self, run: Run) -> None:
        if run.run_id is None:
            return
        now = timezone.now()
        WorkflowRun.objects.filter(pk=run.run_id).update(
            status=run.status,
            step=run.step,
            agent=run.agent,
            last_checkpoint_id=run.last_checkpoint_id or "",
            error=run.error,
            outcome={
                "degraded_steps": run.degraded_steps,
                "retry_after": run.retry_after,
                "duration_ms": run.duration_ms,
            },
            updated_at=now,
            finished_at=now,
        )
