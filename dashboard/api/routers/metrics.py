from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from dashboard import audit
from dashboard.api.auth import require
from dashboard.api.errors import BODY_ERRORS, READ_ERRORS
from dashboard.api.schemas import MetricsOut, MutationOut, ReasonIn
from dashboard.permissions import RESET_METRICS
from resilience import telemetry

router = Router(tags=["metrics"], auth=require())


@router.get(
    "",
    response={200: MetricsOut, **READ_ERRORS},
    summary="Current metrics",
    description="Every counter, gauge and histogram (count, sum, min, max, p50/p95/p99) "
    'keyed `name` or `name{label="value"}`. Prometheus text is served at `/metrics`.',
)
def get_metrics(request: HttpRequest) -> Any:
    return telemetry.metrics.snapshot()


@router.post(
    "/reset",
    response={200: MutationOut, **BODY_ERRORS},
    auth=require(RESET_METRICS),
    summary="Reset all metrics",
    description='Audited. The JSON body `{"reason": "..."}` is optional.',
)
def reset_metrics(request: HttpRequest, payload: ReasonIn | None = None) -> dict[str, Any]:
    reason = payload.reason.strip() if payload is not None else ""
    telemetry.metrics.reset()
    entry = audit.record(
        user=request.user, source="api", action="metrics.reset", target="metrics", reason=reason
    )
    return {"detail": "all metrics were reset", "audit_id": entry.pk}
