"""``/api/workflows``: execute the simulated workflow and follow its runs.

Served by the workflow API (``workflows_api`` in :mod:`dashboard.api.api`), which has
the same authentication, throttling, validation and error bodies as the observability
API. Executions are also limited per caller by ``workflows.execute`` (see
:mod:`dashboard.workflows.gate`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import P, PathEx, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from dashboard.api.auth import caller_key, require
from dashboard.api.errors import (
    BODY_LOOKUP_ERRORS,
    LOOKUP_ERRORS,
    READ_ERRORS,
    field_error,
)
from dashboard.api.schemas import ErrorOut
from dashboard.api.throttle import RateLimited
from dashboard.checkpoints.models import CheckpointFork
from dashboard.permissions import EXECUTE_WORKFLOW
from dashboard.workflows import gate, selectors
from dashboard.workflows.definition import AGENT_ID
from dashboard.workflows.engine import NotResumable, WorkflowBusy, engine
from dashboard.workflows.models import RunStatus, WorkflowRun
from dashboard.workflows.resume import MAX_REASON, RESUME, resume_workflow
from resilience.checkpoint import CHECKPOINT_ID_PATTERN, checkpoint_manager
from resilience.errors import CheckpointCorruptedError, CheckpointNotFoundError

WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
WorkflowId = PathEx[
    str,
    P(
        pattern=WORKFLOW_ID_PATTERN,
        description="1-128 letters, digits or _ . : @ - starting with a letter or digit",
    ),
]
RunStatusName = Literal["running", "succeeded", "degraded", "failed", "interrupted"]


class RunOut(Schema):
    run_id: int
    workflow_id: str
    status: RunStatusName
    step: int = Field(description="steps completed")
    total_steps: int
    agent: str = Field(description="agent of the latest step")
    start_step: int = Field(description="step this run started at (> 0 when resumed)")
    resumed_from: str | None = Field(description="checkpoint this run resumed from")
    checkpoint_id: str | None = Field(description="latest checkpoint of this run")
    trace_id: str
    degraded_steps: list[str] = Field(description="steps that used a fallback")
    error: str
    retry_after: float | None = Field(description="seconds until a retry may succeed")
    duration_ms: float | None
    caller: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ForkOut(Schema):
    workflow_id: str = Field(description="the fork")
    checkpoint_id: str = Field(description="the fork's first checkpoint")
    parent_workflow_id: str
    parent_checkpoint_id: str
    edited: bool
    created_at: datetime


class WorkflowOut(Schema):
    workflow_id: str
    status: RunStatusName = Field(description="status of the latest run")
    step: int
    total_steps: int
    agent: str
    checkpoint_id: str | None = Field(description="the workflow's latest checkpoint")
    trace_id: str
    running: bool = Field(description="executing in the process that answered")
    runs: list[RunOut] = Field(description="latest runs, newest first")
    timeline_url: str = Field(description="the dashboard's checkpoint timeline of this workflow")
    forked_from: ForkOut | None = Field(description="lineage: the checkpoint this was forked from")
    forks: list[ForkOut] = Field(description="lineage: workflows forked from this one")


class ExecuteIn(Schema):
    from_checkpoint: str | None = Field(
        None,
        description="re-run from this checkpoint of the workflow instead of its latest "
        f"(needs `{RESUME}`; audited)",
    )
    reason: str = Field("", max_length=MAX_REASON, description="why (kept in the audit trail)")


class RunListOut(Schema):
    items: list[RunOut]
    count: int


class RunFilters(Schema):
    status: RunStatusName | None = None
    limit: int = Field(50, ge=1, le=500)


def timeline_url(workflow_id: str) -> str:
    return reverse("checkpoints:timeline", args=[workflow_id])


def run_out(row: WorkflowRun) -> dict[str, Any]:
    outcome = row.outcome if isinstance(row.outcome, dict) else {}
    return {
        "run_id": row.pk,
        "workflow_id": row.workflow_id,
        "status": row.status,
        "step": row.step,
        "total_steps": row.total_steps,
        "agent": row.agent,
        "start_step": row.start_step,
        "resumed_from": row.resumed_from or None,
        "checkpoint_id": row.last_checkpoint_id or None,
        "trace_id": row.trace_id,
        "degraded_steps": list(outcome.get("degraded_steps") or []),
        "error": row.error,
        "retry_after": outcome.get("retry_after"),
        "duration_ms": outcome.get("duration_ms"),
        "caller": row.caller,
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
    }


# The operationIds this router had before it moved here (generated clients use them).
OPERATION_ID_PREFIX = "dashboard_workflows_api_"

router = Router(tags=["workflows"], auth=require())


@router.get(
    "",
    operation_id=OPERATION_ID_PREFIX + "list_runs",
    response={200: RunListOut, **READ_ERRORS},
    summary="Recent runs, newest first",
)
def list_runs(request: HttpRequest, filters: Query[RunFilters]) -> dict[str, Any]:
    items = [
        run_out(row) for row in selectors.recent_runs(limit=filters.limit, status=filters.status)
    ]
    return {"items": items, "count": len(items)}


@router.get(
    "/{workflow_id}",
    operation_id=OPERATION_ID_PREFIX + "get_workflow",
    response={200: WorkflowOut, **LOOKUP_ERRORS},
    summary="A workflow's progress",
    description="Step, agent, latest checkpoint and outcome of its latest run, and its "
    "recent runs. 404 if the workflow never ran.",
)
def get_workflow(request: HttpRequest, workflow_id: WorkflowId) -> dict[str, Any]:
    runs = selectors.workflow_runs(workflow_id=workflow_id, limit=10)
    if not runs:
        raise HttpError(404, f"no workflow {workflow_id!r} has run")
    latest = runs[0]
    checkpoint_id = checkpoint_manager.get_latest_checkpoint(
        agent_id=AGENT_ID, workflow_id=workflow_id
    )
    return {
        "workflow_id": workflow_id,
        "status": latest.status,
        "step": latest.step,
        "total_steps": latest.total_steps,
        "agent": latest.agent,
        "checkpoint_id": checkpoint_id,
        "trace_id": latest.trace_id,
        "running": workflow_id in engine().running(),
        "runs": [run_out(row) for row in runs],
        "timeline_url": timeline_url(workflow_id),
        "forked_from": CheckpointFork.objects.filter(workflow_id=workflow_id).first(),
        "forks": list(CheckpointFork.objects.filter(parent_workflow_id=workflow_id)[:100]),
    }


def _execute_body(request: HttpRequest) -> ExecuteIn:
    # Read here rather than as a ninja body parameter: a session caller's CSRF check
    # has already consumed a form-encoded stream, and an empty POST must keep working.
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data: Any = request.POST.dict()
    else:
        raw = request.body
        try:
            data = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise HttpError(400, "Cannot parse request body: send JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the request body must be a JSON object")
    try:
        return ExecuteIn.model_validate(data)
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "body"
        raise field_error("body", field, error["msg"]) from None


_EXECUTE_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": ExecuteIn.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": ExecuteIn.model_json_schema()},
        },
    }
}


@router.post(
    "/{workflow_id}/execute",
    operation_id=OPERATION_ID_PREFIX + "execute_workflow",
    openapi_extra=_EXECUTE_BODY,
    response={200: RunOut, 409: ErrorOut, 503: RunOut, **BODY_LOOKUP_ERRORS},
    auth=require(EXECUTE_WORKFLOW),
    summary="Execute a workflow (resuming from its latest checkpoint, or a chosen one)",
    description="Runs the planner, researcher, tool caller and writer agents, each external "
    "call behind a circuit breaker, traced as one trace and checkpointed every N steps. "
    "A workflow whose last run failed or was interrupted resumes from its latest "
    'checkpoint; the optional JSON body `{"from_checkpoint": "ck_...", "reason": '
    f'"..."}}` re-runs it from that checkpoint instead (needs `{RESUME}`, audited; 404 '
    "if it does not exist, 409 if it fails verification, 422 if it is another workflow's "
    "or cannot be run from). Answers 200 when the run completed (`succeeded`, or "
    "`degraded` when a fallback was used), 503 with `Retry-After` when it failed because "
    "a service it needs is unavailable, 409 when it is already running, 429 when the "
    f"caller's execution budget ({gate.NAME}) is spent.",
)
def execute_workflow(
    request: HttpRequest, response: HttpResponse, workflow_id: WorkflowId
) -> Status[dict[str, Any]]:
    payload = _execute_body(request)
    chosen = payload.from_checkpoint
    if chosen is not None:
        if not request.user.has_perm(RESUME):
            raise HttpError(403, f"re-running from a checkpoint needs the {RESUME} permission")
        if not CHECKPOINT_ID_PATTERN.fullmatch(chosen):
            raise field_error("body", "from_checkpoint", "must look like ck_<14 hex>_<12 hex>")
    caller = caller_key(request, request.user)
    wait = gate.admit(caller)
    if wait is not None:
        raise RateLimited(wait, gate.headers(caller, wait))
    try:
        if chosen is not None:
            row = resume_workflow(
                workflow_id=workflow_id,
                checkpoint_id=chosen,
                user=request.user,
                reason=payload.reason,
                source="api",
            )
        else:
            run = engine().execute(workflow_id, caller=request.user.get_username())
            row = WorkflowRun.objects.get(pk=run.run_id or 0)
    except WorkflowBusy as exc:
        raise HttpError(409, str(exc)) from None
    except CheckpointNotFoundError as exc:
        raise HttpError(404, str(exc)) from None
    except CheckpointCorruptedError as exc:
        raise HttpError(409, f"{exc}: it failed verification and cannot be run from") from None
    except NotResumable as exc:
        raise field_error("body", "from_checkpoint", str(exc)) from None
    if row.status == RunStatus.FAILED:
        retry_after = (row.outcome or {}).get("retry_after")
        if retry_after is not None:
            response["Retry-After"] = str(max(int(retry_after + 0.999), 1))
        return Status(503, run_out(row))
    return Status(200, run_out(row))
