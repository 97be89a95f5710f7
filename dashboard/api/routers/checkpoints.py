from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest
from ninja import P, PathEx, Query, QueryEx, Router
from ninja.errors import HttpError

from dashboard.api.auth import require
from dashboard.api.errors import (
    BODY_ERRORS,
    LOOKUP_ERRORS,
    READ_ERRORS,
    field_error,
)
from dashboard.api.schemas import (
    CHECKPOINT_ID_PATTERN,
    CheckpointFilters,
    CheckpointOut,
    CheckpointPageOut,
    CleanupIn,
    CleanupOut,
    DeletedOut,
    PageIn,
)
from dashboard.audit import MAX_REASON
from dashboard.checkpoints import selectors, services
from dashboard.checkpoints.models import Checkpoint
from dashboard.permissions import DELETE_CHECKPOINT
from resilience.errors import CheckpointNotFoundError

router = Router(tags=["checkpoints"], auth=require())

CheckpointId = PathEx[str, P(pattern=CHECKPOINT_ID_PATTERN, description="ck_<14 hex>_<12 hex>")]


def _out(row: Checkpoint) -> dict[str, Any]:
    return {
        "checkpoint_id": row.checkpoint_id,
        "agent_id": row.agent_id,
        "workflow_id": row.workflow_id,
        "created_at": datetime.fromtimestamp(row.created_ts, tz=UTC),
        "raw_size": row.raw_size,
        "stored_size": row.stored_size,
        "ratio": round(row.ratio, 3),
        "sha256": row.sha256,
        "codec": row.codec,
        "metadata": row.metadata if isinstance(row.metadata, dict) else {},
    }


@router.get(
    "",
    response={200: CheckpointPageOut, **READ_ERRORS},
    summary="List checkpoints, newest first",
)
def list_checkpoints(
    request: HttpRequest, filters: Query[CheckpointFilters], paging: Query[PageIn]
) -> dict[str, Any]:
    rows = selectors.list_checkpoints(agent_id=filters.agent_id, workflow_id=filters.workflow_id)
    offset = (paging.page - 1) * paging.page_size
    found = list(rows[offset : offset + paging.page_size + 1])
    has_next = len(found) > paging.page_size
    total = rows.count() if has_next or paging.page > 1 else len(found)
    return {
        "items": [_out(row) for row in found[: paging.page_size]],
        "page": paging.page,
        "page_size": paging.page_size,
        "total": total,
        "has_next": has_next,
    }


@router.post(
    "/cleanup",
    response={200: CleanupOut, **BODY_ERRORS},
    auth=require(DELETE_CHECKPOINT),
    summary="Remove old checkpoints",
    description="Per (agent_id, workflow_id) group, a checkpoint goes when it is not among "
    "the newest `keep_last` (if given) and is older than `older_than` seconds (if given). "
    "`dry_run` only reports. Audited.",
)
def cleanup(request: HttpRequest, payload: CleanupIn) -> Any:
    if payload.keep_last is None and payload.older_than is None:
        raise field_error("body", "keep_last", "give keep_last and/or older_than")
    try:
        result = services.cleanup(
            keep_last=payload.keep_last,
            older_than=payload.older_than,
            dry_run=payload.dry_run,
            actor=request.user,
            reason=payload.reason.strip(),
            source="api",
        )
    except ValueError as exc:
        field = "older_than" if "older_than" in str(exc) else "keep_last"
        raise field_error("body", field, str(exc)) from exc
    return result.to_dict()


@router.get(
    "/{checkpoint_id}",
    response={200: CheckpointOut, **LOOKUP_ERRORS},
    summary="One checkpoint's metadata",
)
def get_checkpoint(request: HttpRequest, checkpoint_id: CheckpointId) -> dict[str, Any]:
    row = selectors.get_checkpoint(checkpoint_id=checkpoint_id)
    if row is None:
        raise HttpError(404, f"no checkpoint {checkpoint_id}")
    return _out(row)


@router.delete(
    "/{checkpoint_id}",
    response={200: DeletedOut, **LOOKUP_ERRORS},
    auth=require(DELETE_CHECKPOINT),
    summary="Delete a checkpoint (record and blob)",
    description="Audited; pass `?reason=...` to say why.",
)
def delete_checkpoint(
    request: HttpRequest,
    checkpoint_id: CheckpointId,
    reason: QueryEx[str, P(max_length=MAX_REASON, description="why")] = "",
) -> dict[str, Any]:
    try:
        services.delete_checkpoint(
            checkpoint_id=checkpoint_id, actor=request.user, reason=reason.strip(), source="api"
        )
    except CheckpointNotFoundError:
        raise HttpError(404, f"no checkpoint {checkpoint_id}") from None
    return {"checkpoint_id": checkpoint_id, "deleted": True}
