"""``GET /alerts``: the alert history, filtered and paginated.

Mounted by the observability API at ``/api/observability/alerts``; the queries live in
:mod:`dashboard.alerts.selectors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from dashboard.alerts import selectors
from dashboard.api.auth import require
from dashboard.api.errors import READ_ERRORS, field_error

# The operationIds this router had before it moved here (generated clients use them).
OPERATION_ID_PREFIX = "dashboard_alerts_api_"

router = Router(tags=["alerts"], auth=require())

MAX_ID = 2**63 - 1  # BigAutoField
AlertState = Literal["firing", "resolved"]
SeverityName = Literal["info", "warning", "critical"]


class DeliveryOut(Schema):
    channel: str
    event: AlertState
    outcome: Literal["pending", "sent", "failed", "skipped"]
    attempts: int
    error: str
    created_at: datetime
    finished_at: datetime | None


class AlertOut(Schema):
    id: int
    rule: str
    rule_id: int
    kind: str
    subject: str
    state: AlertState
    severity: SeverityName
    started_at: datetime
    ended_at: datetime | None
    value: float | None
    last_value: float | None
    message: str
    deliveries: list[DeliveryOut]


class AlertPageOut(Schema):
    items: list[AlertOut]
    page: int
    page_size: int
    total: int
    has_next: bool


class AlertFilters(Schema):
    state: AlertState | None = None
    severity: SeverityName | None = None
    rule: int | None = Field(None, ge=1, le=MAX_ID, description="rule id")
    # NUL is refused up front: PostgreSQL cannot compare text containing it.
    subject: str | None = Field(
        None, max_length=300, pattern=r"^[^\x00]*$", description="breaker, limiter, metric..."
    )
    since: datetime | None = Field(None, description="alerts started at or after this time")
    page: int = Field(1, ge=1, le=100_000)
    page_size: int = Field(50, ge=1, le=500)


def _out(alert: Any) -> dict[str, Any]:
    return {
        **alert.as_dict(),
        "started_at": alert.started_at,
        "ended_at": alert.ended_at,
        "deliveries": [
            {
                "channel": d.channel_name,
                "event": d.event,
                "outcome": d.outcome,
                "attempts": d.attempts,
                "error": d.error,
                "created_at": d.created_at,
                "finished_at": d.finished_at,
            }
            for d in alert.deliveries.all()
        ],
    }


def _utc(field: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise field_error("query", field, f"datetime out of range: {exc}") from exc


@router.get(
    "",
    operation_id=OPERATION_ID_PREFIX + "list_alerts",
    response={200: AlertPageOut, **READ_ERRORS},
    summary="List alerts",
)
def list_alerts(request: HttpRequest, filters: Query[AlertFilters]) -> dict[str, Any]:
    """Alerts newest first: state, severity, rule, value seen and each delivery's outcome."""
    alerts = selectors.list_alerts(
        state=filters.state,
        severity=filters.severity,
        rule=filters.rule,
        subject=filters.subject,
        since=_utc("since", filters.since),
    )
    total = alerts.count()
    start = (filters.page - 1) * filters.page_size
    items = [_out(alert) for alert in alerts[start : start + filters.page_size]]
    return {
        "items": items,
        "page": filters.page,
        "page_size": filters.page_size,
        "total": total,
        "has_next": start + len(items) < total,
    }
