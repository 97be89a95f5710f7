from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router
from ninja.errors import HttpError

from dashboard.api.auth import require
from dashboard.api.errors import (
    BODY_LOOKUP_ERRORS,
    LOOKUP_ERRORS,
    READ_ERRORS,
    field_error,
)
from dashboard.api.schemas import BreakerEventPageOut, BreakerListOut, BreakerOut, PageIn, ReasonIn
from dashboard.breakers.models import BreakerEvent
from dashboard.breakers.services import BreakerNotFound, act_on_breaker
from dashboard.fleet import selectors as fleet_selectors
from dashboard.permissions import RESET_BREAKER
from dashboard.selectors import breaker_overview
from resilience.circuit_breaker import circuit_breaker_registry

router = Router(tags=["circuit breakers"], auth=require())


def _not_found(name: str) -> HttpError:
    detail = f"no circuit breaker named {name!r} in this process"
    if fleet_selectors.breaker_groups(name=name):
        detail += f"; fleet instances hold it: see /api/observability/fleet/circuit-breakers/{name}"
    return HttpError(404, detail)


@router.get("", response={200: BreakerListOut, **READ_ERRORS}, summary="All circuit breakers")
def list_breakers(request: HttpRequest) -> dict[str, Any]:
    items = breaker_overview(history=0)
    fleet = fleet_selectors.breaker_groups()
    return {"items": items, "count": len(items), "fleet": fleet, "fleet_count": len(fleet)}


@router.get("/{name}", response={200: BreakerOut, **LOOKUP_ERRORS}, summary="One breaker's state")
def get_breaker(request: HttpRequest, name: str) -> dict[str, Any]:
    breaker = circuit_breaker_registry.get(name)
    if breaker is None:
        raise _not_found(name)
    return breaker.snapshot()


@router.post(
    "/{name}/reset",
    response={200: BreakerOut, **BODY_LOOKUP_ERRORS},
    auth=require(RESET_BREAKER),
    summary="Reset (close) a breaker",
    description="Audited and recorded in the breaker's history. The JSON body "
    '`{"reason": "..."}` is optional.',
)
def reset_breaker(request: HttpRequest, name: str, payload: ReasonIn | None = None) -> Any:
    reason = payload.reason if payload is not None else ""
    try:
        return act_on_breaker(
            name=name, action="reset", user=request.user, reason=reason, source="api"
        )
    except BreakerNotFound:
        raise _not_found(name) from None
    except ValueError as exc:
        raise field_error("body", "reason", str(exc)) from exc


@router.get(
    "/{name}/events",
    response={200: BreakerEventPageOut, **LOOKUP_ERRORS},
    summary="A breaker's state changes, newest first",
    description="History from the database, from every process (so also for breakers "
    "not registered in the one answering).",
)
def breaker_events(request: HttpRequest, name: str, paging: Query[PageIn]) -> dict[str, Any]:
    events = BreakerEvent.objects.filter(breaker=name).order_by("-occurred_at", "-id")
    offset = (paging.page - 1) * paging.page_size
    rows = list(events[offset : offset + paging.page_size + 1])
    has_next = len(rows) > paging.page_size
    total = events.count() if has_next or paging.page > 1 else len(rows)
    if total == 0 and circuit_breaker_registry.get(name) is None:
        raise _not_found(name)
    return {
        "items": rows[: paging.page_size],
        "page": paging.page,
        "page_size": paging.page_size,
        "total": total,
        "has_next": has_next,
    }
