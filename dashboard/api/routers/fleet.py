"""Read the fleet and steer its breakers: ``/api/observability/fleet/...``."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from dashboard.api.auth import require
from dashboard.api.errors import BODY_LOOKUP_ERRORS, LOOKUP_ERRORS, READ_ERRORS, field_error
from dashboard.audit import MAX_REASON
from dashboard.breakers.services import PERMISSIONS, Action
from dashboard.fleet import selectors, services
from dashboard.fleet.schemas import (
    BreakerGroupListOut,
    BreakerGroupOut,
    CommandOut,
    InstanceListOut,
    LimiterGroupListOut,
)

# The operationIds this router had before it moved here (generated clients use them).
OPERATION_ID_PREFIX = "dashboard_fleet_api_"

router = Router(tags=["fleet"], auth=require())


class FleetActionIn(Schema):
    reason: str = Field("", max_length=MAX_REASON, description="why (kept in the audit trail)")
    instance: str | None = Field(None, max_length=64, description="only this instance id")


class FleetActionOut(Schema):
    batch: str = Field(description="follow it at /fleet/commands/{batch}")
    name: str
    action: str
    instances: list[str] = Field(description="live instances the command was queued for")
    unreachable: list[str] = Field(description="stale instances holding it (not sent)")
    shared: bool = Field(description="shared through Redis: sent to one instance only")


class BatchCommandOut(CommandOut):
    instance: str
    label: str


class BatchOut(Schema):
    items: list[BatchCommandOut]
    count: int


@router.get(
    "/instances",
    response={200: InstanceListOut, **READ_ERRORS},
    summary="Instances",
    operation_id=OPERATION_ID_PREFIX + "list_instances",
)
def list_instances(request: HttpRequest) -> dict[str, Any]:
    items = selectors.instances()
    return {"items": items, "count": len(items)}


@router.get(
    "/circuit-breakers",
    response={200: BreakerGroupListOut, **READ_ERRORS},
    summary="Breakers across the fleet, grouped by name, worst state first",
    operation_id=OPERATION_ID_PREFIX + "list_breakers",
)
def list_breakers(request: HttpRequest) -> dict[str, Any]:
    items = selectors.breaker_groups()
    return {"items": items, "count": len(items)}


@router.get(
    "/rate-limiters",
    response={200: LimiterGroupListOut, **READ_ERRORS},
    summary="Rate limiters across the fleet, grouped by name, most rejections first",
    operation_id=OPERATION_ID_PREFIX + "list_limiters",
)
def list_limiters(request: HttpRequest) -> dict[str, Any]:
    items = selectors.limiter_groups()
    return {"items": items, "count": len(items)}


@router.get(
    "/circuit-breakers/{name}",
    response={200: BreakerGroupOut, **LOOKUP_ERRORS},
    summary="One breaker across the fleet",
    operation_id=OPERATION_ID_PREFIX + "get_breaker",
)
def get_breaker(request: HttpRequest, name: str) -> Any:
    groups = selectors.breaker_groups(name=name)
    if not groups:
        raise HttpError(404, f"no fleet instance reports a breaker named {name!r}")
    return groups[0]


def _act(request: HttpRequest, name: str, action: Action, payload: FleetActionIn | None) -> Any:
    payload = payload or FleetActionIn(reason="", instance=None)
    try:
        result = services.act_on_fleet_breaker(
            name=name,
            action=action,
            user=request.user,
            reason=payload.reason,
            source="api",
            instance_id=payload.instance,
        )
    except services.FleetBreakerNotFound:
        raise HttpError(404, f"no fleet instance reports a breaker named {name!r}") from None
    except ValueError as exc:
        raise field_error("body", "reason", str(exc)) from exc
    return Status(202, result)


_ACTION_HELP = (
    "Queues one command per live instance holding the breaker (one instance for a "
    "breaker shared through Redis), delivered in the answer to its next report; follow "
    "the outcome at `/fleet/commands/{batch}`. Instances that start later are not "
    "acted on retroactively. The JSON body is optional."
)


_SUMMARIES: dict[Action, str] = {
    "reset": "Reset (close) a breaker on every live instance",
    "force_open": "Force a breaker open on every live instance",
    "disable": "Disable a breaker on every live instance",
}


def _action_endpoint(action: Action) -> Any:
    def endpoint(request: HttpRequest, name: str, payload: FleetActionIn | None = None) -> Any:
        return _act(request, name, action, payload)

    endpoint.__name__ = f"{action}_breaker"
    return router.post(
        f"/circuit-breakers/{{name}}/{action}",
        response={202: FleetActionOut, **BODY_LOOKUP_ERRORS},
        auth=require(PERMISSIONS[action]),
        summary=_SUMMARIES[action],
        description=_ACTION_HELP,
        operation_id=f"{OPERATION_ID_PREFIX}{action}_breaker",
    )(endpoint)


reset_breaker = _action_endpoint("reset")
force_open_breaker = _action_endpoint("force_open")
disable_breaker = _action_endpoint("disable")


@router.get(
    "/commands/{batch}",
    response={200: BatchOut, **LOOKUP_ERRORS},
    summary="Where one fleet action stands on each instance",
    operation_id=OPERATION_ID_PREFIX + "get_batch",
)
def get_batch(request: HttpRequest, batch: str) -> dict[str, Any]:
    try:
        uuid.UUID(batch)
    except ValueError:
        raise HttpError(404, f"no fleet action {batch!r}") from None
    items = selectors.batch_commands(batch=batch)
    if not items:
        raise HttpError(404, f"no fleet action {batch!r}")
    return {"items": items, "count": len(items)}
