"""The execute bench's URLconf: the dashboard's routes plus the unhardened twin.

``POST /bench/plain/{workflow_id}/execute`` is the handler of
``POST /api/workflows/{workflow_id}/execute`` (same ninja API settings, token auth and
permission, body parsing, WorkflowRun rows written at start, after each step and at
the end, the same response) without the hardening: no per-caller limiter, no circuit
breakers, no spans or workflow metrics, no checkpoints (every run starts afresh, as the
hardened one does after a completed run). The ratio of the two is what the hardening
costs per execution.
"""

from __future__ import annotations

import threading
from typing import Any

from django.http import HttpRequest
from django.urls import path
from ninja import Router, Status

from dashboard.api.api import build_api
from dashboard.api.auth import require
from dashboard.api.routers.workflows import RunOut, WorkflowId, _execute_body, run_out
from dashboard.permissions import EXECUTE_WORKFLOW
from dashboard.urls import urlpatterns as dashboard_urlpatterns
from dashboard.workflows import progress, simulated
from dashboard.workflows.definition import (
    STEPS,
    Run,
    local_work,
    new_state,
    validate_workflow_id,
)
from dashboard.workflows.engine import WorkflowBusy
from dashboard.workflows.models import WorkflowRun
from dashboard.workflows.simulated import ServiceError


class PlainEngine:
    """:class:`~dashboard.workflows.engine.WorkflowEngine`'s steps, unhardened."""

    def __init__(self) -> None:
        self.world = simulated.world()
        self.progress = progress.RunRecorder()
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def execute(self, workflow_id: str, caller: str) -> Run:
        validate_workflow_id(workflow_id)
        with self._lock:
            if workflow_id in self._running:
                raise WorkflowBusy(workflow_id)
            self._running.add(workflow_id)
        try:
            return self._execute(workflow_id, caller)
        finally:
            with self._lock:
                self._running.discard(workflow_id)

    def _execute(self, workflow_id: str, caller: str) -> Run:
        state = new_state(workflow_id)
        state["status"] = "running"
        run = Run(
            workflow_id=workflow_id,
            caller=caller,
            total_steps=len(STEPS),
            start_step=0,
            resumed_from=None,
            step=0,
        )
        self.progress.started(run)
        for index, step in enumerate(STEPS):
            run.agent = step.agent
            result: dict[str, Any]
            if step.service is None:
                result = local_work(step, state)
            else:
                try:
                    result = self.world.call(step.service, step.operation)
                except ServiceError as exc:
                    if step.critical:
                        run.status, run.error = "failed", str(exc)
                        break
                    result = {"fallback": True, "reason": str(exc)}
                    state["degraded"].append(step.name)
            state["results"][step.name] = result
            state["next_step"] = run.step = index + 1
            run.degraded_steps = list(state["degraded"])
            self.progress.step_done(run)
        else:
            run.status = "degraded" if state["degraded"] else "succeeded"
        self.progress.finished(run)
        return run


_engine = PlainEngine()
router = Router(auth=require())


@router.post(
    "/{workflow_id}/execute", response={200: RunOut, 503: RunOut}, auth=require(EXECUTE_WORKFLOW)
)
def execute_plain(request: HttpRequest, workflow_id: WorkflowId) -> Status[dict[str, Any]]:
    _execute_body(request)
    run = _engine.execute(workflow_id, caller=request.user.get_username())
    row = WorkflowRun.objects.get(pk=run.run_id or 0)
    return Status(503 if run.status == "failed" else 200, run_out(row))


plain_api = build_api(
    title="bench: unhardened execute", urls_namespace="bench-plain", docs_url=None
)
plain_api.add_router("/plain", router)

urlpatterns = [path("bench/", plain_api.urls), *dashboard_urlpatterns]
