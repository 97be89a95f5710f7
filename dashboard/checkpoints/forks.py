"""Writes for checkpoint time travel: fork a checkpoint into a new workflow.

A fork is a new checkpoint saved through the manager (its own blob, SHA-256 and HMAC)
under a new workflow id, plus a ``CheckpointFork`` row (the lineage) and an audit
entry, in one transaction. The parent checkpoint is only read (verified first), never
written. If the transaction fails after the blob was written, the blob is an orphan
that ``manage.py checkpoints orphans`` finds; never a row without its blob.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction

from dashboard import audit
from dashboard.workflows.models import WorkflowRun
from resilience.checkpoint import NAME_PATTERN
from resilience.errors import CheckpointNotFoundError

from .models import Checkpoint, CheckpointFork
from .selectors import load_state
from .statediff import diff_states
from .store import get_manager

Actor = AbstractBaseUser | AnonymousUser | None

MAX_EDITED_PATHS = 100
_RUN_KEYS = ("run_id", "trace_id")  # they name the parent's run, not the fork's
UNCHANGED: Any = object()


class ForkError(ValueError):
    """The fork cannot be made; the message says what to change."""


def check_new_workflow_id(workflow_id: object, *, parent_workflow_id: str) -> str:
    """``workflow_id`` if it is valid and unused (no checkpoint, run or fork has it).

    Raises:
        ForkError: malformed, the parent's own id, or already in use.
    """
    if not isinstance(workflow_id, str) or not NAME_PATTERN.fullmatch(workflow_id):
        raise ForkError(
            "the new workflow id must be 1-128 letters, digits or _ . : @ - starting with a "
            f"letter or digit, got {workflow_id!r}"
        )
    if workflow_id == parent_workflow_id:
        raise ForkError("a fork needs a new workflow id, not its parent's")
    if (
        Checkpoint.objects.filter(workflow_id=workflow_id).exists()
        or WorkflowRun.objects.filter(workflow_id=workflow_id).exists()
        or CheckpointFork.objects.filter(workflow_id=workflow_id).exists()
    ):
        raise ForkError(f"workflow {workflow_id!r} already exists; choose another id")
    return workflow_id


def fork_checkpoint(
    *,
    checkpoint_id: str,
    new_workflow_id: str,
    state: Any = UNCHANGED,
    actor: Actor = None,
    reason: str = "",
    source: str = "dashboard",
) -> CheckpointFork:
    """Copy ``checkpoint_id`` under ``new_workflow_id``, with ``state`` if given.

    Raises:
        CheckpointNotFoundError: no such checkpoint.
        CheckpointCorruptedError: the parent failed verification (nothing is copied).
        ForkError: an unusable new workflow id.
        TypeError: ``state`` holds a value a checkpoint cannot store.
    """
    parent = Checkpoint.objects.filter(pk=checkpoint_id).first()
    if parent is None:
        raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}")
    check_new_workflow_id(new_workflow_id, parent_workflow_id=parent.workflow_id)
    original = load_state(checkpoint_id=parent.checkpoint_id)  # verified before decoding
    if state is UNCHANGED:
        state, edited_paths = original, []
    else:
        edited_paths = [c.path for c in diff_states(original, state).changes]
    metadata = {k: v for k, v in (parent.metadata or {}).items() if k not in _RUN_KEYS}
    metadata.update(
        forked_from=parent.checkpoint_id,
        parent_workflow_id=parent.workflow_id,
        edited=bool(edited_paths),
    )
    try:
        with transaction.atomic():
            new_id = get_manager().save_checkpoint(
                state, parent.agent_id, new_workflow_id, metadata
            )
            fork = CheckpointFork.objects.create(
                workflow_id=new_workflow_id,
                agent_id=parent.agent_id,
                checkpoint_id=new_id,
                parent_workflow_id=parent.workflow_id,
                parent_checkpoint_id=parent.checkpoint_id,
                edited=bool(edited_paths),
                edited_paths=edited_paths[:MAX_EDITED_PATHS],
                created_by=cast(Any, actor if isinstance(actor, AbstractBaseUser) else None),
                reason=reason,
            )
            audit.record(
                user=actor,
                source=source,
                action="checkpoint.fork",
                target=new_workflow_id,
                reason=reason,
                details={
                    "checkpoint_id": new_id,
                    "parent_checkpoint_id": parent.checkpoint_id,
                    "parent_workflow_id": parent.workflow_id,
                    "edited_paths": edited_paths[:MAX_EDITED_PATHS],
                },
            )
    except IntegrityError:
        raise ForkError(f"workflow {new_workflow_id!r} already exists; choose another id") from None
    return fork
