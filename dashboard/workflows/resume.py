"""Re-run a workflow from a chosen checkpoint ("resume from here"), audited."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from dashboard import audit
from dashboard.audit import MAX_REASON
from dashboard.permissions import RESUME_CHECKPOINT

from .engine import engine
from .models import WorkflowRun

RESUME = RESUME_CHECKPOINT
__all__ = ["MAX_REASON", "RESUME", "resume_workflow"]


def resume_workflow(
    *,
    workflow_id: str,
    checkpoint_id: str,
    user: AbstractBaseUser | AnonymousUser,
    reason: str = "",
    source: str = "dashboard",
) -> WorkflowRun:
    """Run ``workflow_id`` from ``checkpoint_id`` (not its latest) and audit it.

    Raises:
        ValueError: a reason over MAX_REASON characters, a malformed id, or a checkpoint
            that cannot be run from (``NotResumable`` says why).
        CheckpointNotFoundError / CheckpointCorruptedError: the checkpoint is unusable.
        WorkflowBusy: the workflow is running in this process.
    """
    if len(reason) > MAX_REASON:
        raise ValueError(f"reason must be at most {MAX_REASON} characters, got {len(reason)}")
    caller = user.get_username() if isinstance(user, AbstractBaseUser) else "system"
    run = engine().execute(workflow_id, caller=caller, from_checkpoint=checkpoint_id)
    row = WorkflowRun.objects.filter(pk=run.run_id or 0).first()
    audit.record(
        user=user,
        source=source,
        action="workflow.resume",
        target=workflow_id,
        reason=reason,
        details={
            "checkpoint_id": checkpoint_id,
            "run_id": run.run_id,
            "status": run.status,
            "trace_id": run.trace_id,
        },
    )
    if row is None:  # an engine without a run recorder (tests)
        raise LookupError(f"run of {workflow_id!r} was not recorded")
    return row
