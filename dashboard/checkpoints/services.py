"""Writes: deleting checkpoints (row and blob together), cleanup and orphan removal.

Every function deletes rows first and the blobs once that commits, so a failure or a
rollback can leave an orphan blob (found by ``manage.py checkpoints orphans``) but never
a row whose blob is gone. Each mutation writes one ``AuditEntry`` (who, what, why);
``actor`` is the user (None for the system), ``source`` one of ``AuditEntry.Source``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.db.models import Sum

from dashboard import audit
from resilience.checkpoint import CHECKPOINT_ID_PATTERN, CleanupResult
from resilience.errors import CheckpointNotFoundError, ConfigTypeError, ConfigValueError

from .models import Checkpoint
from .selectors import Orphans
from .store import blobs_handled, delete_blobs_after_commit, get_manager, get_store

Actor = AbstractBaseUser | AnonymousUser | None

AUDIT_MAX_IDS = 1000
"""At most this many ids are listed in one audit entry's details."""
_CHUNK = 500


def _validated(checkpoint_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(checkpoint_ids))
    for checkpoint_id in ids:
        if not isinstance(checkpoint_id, str):
            raise ConfigTypeError(f"checkpoint_id must be a str, got {checkpoint_id!r}")
        if CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id) is None:
            raise ConfigValueError(
                f"checkpoint_id must look like 'ck_<14 hex>_<12 hex>', got {checkpoint_id[:80]!r}"
            )
    return ids


def _delete(ids: list[str]) -> int:
    """Delete rows now and their blobs on commit; returns the rows deleted."""
    deleted = 0
    with blobs_handled():
        for start in range(0, len(ids), _CHUNK):
            deleted += Checkpoint.objects.filter(pk__in=ids[start : start + _CHUNK]).delete()[0]
    delete_blobs_after_commit(ids)
    return deleted


def delete_checkpoint(
    *, checkpoint_id: str, actor: Actor = None, reason: str = "", source: str = "api"
) -> None:
    """Delete one checkpoint: its row, then (on commit) its blob.

    Raises:
        ValueError: a malformed id.
        CheckpointNotFoundError: neither a row nor a blob exists.
    """
    (checkpoint_id,) = _validated([checkpoint_id])
    with transaction.atomic():
        # Without a row, an orphan blob is still removed; with neither, nothing was there.
        if not _delete([checkpoint_id]) and not get_store().delete_blob(checkpoint_id):
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id}")
        audit.record(
            user=actor,
            source=source,
            action="checkpoint.delete",
            target=checkpoint_id,
            reason=reason,
        )


def delete_checkpoints(
    *, checkpoint_ids: Iterable[str], actor: Actor = None, reason: str = "", source: str = "api"
) -> int:
    """Delete these checkpoints (rows, then blobs on commit); unknown ids are ignored.

    Raises:
        ValueError: a malformed id (nothing is deleted).

    Returns:
        How many rows were deleted.
    """
    ids = _validated(checkpoint_ids)
    if not ids:
        return 0
    with transaction.atomic():
        deleted = _delete(ids)
        audit.record(
            user=actor,
            source=source,
            action="checkpoint.delete",
            target=f"{deleted} checkpoints",
            reason=reason,
            details={"checkpoint_ids": ids[:AUDIT_MAX_IDS], "count": deleted},
        )
    return deleted


def cleanup(
    *,
    keep_last: int | None = None,
    older_than: float | timedelta | None = None,
    dry_run: bool = False,
    actor: Actor = None,
    reason: str = "",
    source: str = "api",
    only: Collection[str] | None = None,
) -> CleanupResult:
    """Remove old checkpoints by the manager's rule, per (agent_id, workflow_id) group.

    A checkpoint goes when it is not among the newest ``keep_last`` of its group (if
    given) and is older than ``older_than`` (if given).

    Args:
        keep_last: checkpoints kept per group, >= 1.
        older_than: seconds or a timedelta.
        dry_run: only report.
        only: remove at most these ids (a preview the user confirmed): a checkpoint
            that became eligible after the preview is left alone.

    Raises:
        ValueError / TypeError: invalid arguments, or neither rule given.

    Returns:
        What was (or would be) removed: ids newest first, count, stored bytes.
    """
    plan = get_manager().cleanup(keep_last=keep_last, older_than=older_than, dry_run=True)
    ids = list(plan.checkpoint_ids)
    stored = plan.stored_bytes
    if only is not None:
        allowed = set(only)
        ids = [checkpoint_id for checkpoint_id in ids if checkpoint_id in allowed]
        stored = _stored_bytes(ids) if len(ids) != plan.count else stored
    if not dry_run and ids:
        with transaction.atomic():
            _delete(ids)
            audit.record(
                user=actor,
                source=source,
                action="checkpoint.cleanup",
                target=f"{len(ids)} checkpoints",
                reason=reason,
                details={
                    "keep_last": keep_last,
                    "older_than": _seconds(older_than),
                    "count": len(ids),
                    "stored_bytes": stored,
                    "checkpoint_ids": ids[:AUDIT_MAX_IDS],
                },
            )
    return CleanupResult(
        checkpoint_ids=tuple(ids), count=len(ids), stored_bytes=stored, dry_run=dry_run
    )


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _stored_bytes(ids: list[str]) -> int:
    total = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        total += (
            Checkpoint.objects.filter(pk__in=chunk).aggregate(total=Sum("stored_size"))["total"]
            or 0
        )
    return total


def delete_orphans(
    *, orphans: Orphans, actor: Actor = None, reason: str = "", source: str = "api"
) -> tuple[int, int]:
    """Delete orphan blobs (still without a row) and rows (still without a blob).

    Each is re-checked just before it goes, so a checkpoint completed meanwhile stays.

    Returns:
        (blobs deleted, rows deleted).
    """
    store = get_store()
    blobs: list[str] = []
    rows: list[str] = []
    for checkpoint_id in orphans.blobs:
        if not Checkpoint.objects.filter(pk=checkpoint_id).exists() and store.delete_blob(
            checkpoint_id
        ):
            blobs.append(checkpoint_id)
    with transaction.atomic():
        for checkpoint_id in orphans.rows:
            if store.blobs.exists(checkpoint_id):
                continue
            with blobs_handled():
                if Checkpoint.objects.filter(pk=checkpoint_id).delete()[0]:
                    rows.append(checkpoint_id)
        if blobs or rows:
            audit.record(
                user=actor,
                source=source,
                action="checkpoint.delete_orphans",
                target=f"{len(blobs)} blobs, {len(rows)} rows",
                reason=reason,
                details={"blobs": blobs[:AUDIT_MAX_IDS], "rows": rows[:AUDIT_MAX_IDS]},
            )
    return len(blobs), len(rows)
