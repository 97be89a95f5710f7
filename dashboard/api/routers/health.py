from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from dashboard.api import healthchecks
from dashboard.api.auth import anyone
from dashboard.api.schemas import ErrorOut, HealthOut
from dashboard.permissions import VIEW_DASHBOARD

router = Router(tags=["health"], auth=anyone())


@router.get(
    "",
    response={200: HealthOut, 503: HealthOut, 401: ErrorOut, 429: ErrorOut},
    exclude_none=True,
    summary="Health: ok, degraded or down (503)",
    description="Anonymous callers get the status only; authenticated callers with the "
    "view permission also get each check: database, channel layer, checkpoint storage, "
    "span queue drops, open circuit breakers. `down` (HTTP 503) means the database is "
    "unreachable; `degraded` that another check failed.",
)
def get_health(request: HttpRequest) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    status, checks = healthchecks.run_checks()
    body: dict[str, Any] = {"status": status}
    if user.is_authenticated and user.has_perm(VIEW_DASHBOARD):
        body["checks"] = checks
    return Status(503 if status == "down" else 200, body)
