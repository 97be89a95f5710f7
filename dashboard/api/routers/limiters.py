from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router
from ninja.errors import HttpError

from dashboard.api.auth import require
from dashboard.api.errors import LOOKUP_ERRORS, READ_ERRORS
from dashboard.api.schemas import LimiterListOut, LimiterOut
from dashboard.fleet import selectors as fleet_selectors
from dashboard.selectors import limiter_overview
from resilience.rate_limiter import rate_limiter_registry

router = Router(tags=["rate limiters"], auth=require())


@router.get("", response={200: LimiterListOut, **READ_ERRORS}, summary="All named rate limiters")
def list_limiters(request: HttpRequest) -> dict[str, Any]:
    items = limiter_overview()
    fleet = fleet_selectors.limiter_groups()
    return {"items": items, "count": len(items), "fleet": fleet, "fleet_count": len(fleet)}


@router.get("/{name}", response={200: LimiterOut, **LOOKUP_ERRORS}, summary="One rate limiter")
def get_limiter(request: HttpRequest, name: str) -> dict[str, Any]:
    limiter = rate_limiter_registry.get(name)
    if limiter is None:
        raise HttpError(404, f"no rate limiter named {name!r} in this process")
    return limiter.snapshot()
