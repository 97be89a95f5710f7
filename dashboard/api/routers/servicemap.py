"""GET /api/observability/service-map: services and the calls between them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema

from dashboard.api.auth import require
from dashboard.api.errors import READ_ERRORS
from dashboard.servicemap import selectors
from dashboard.servicemap.rollup import rollup
from dashboard.servicemap.views import ON_DEMAND_SPANS

router = Router(tags=["service map"], auth=require())

RangeKey = Literal["5m", "15m", "1h", "6h", "24h"]


class BreakerBadgeOut(Schema):
    name: str
    state: str = Field(description="closed, open, half_open, forced_open, disabled or unknown")
    source: str = Field(description="fleet (the caller's workers), local (this process) or ''")


class EdgeOut(Schema):
    caller: str
    callee: str
    calls: int
    errors: int
    rate_per_s: float
    error_rate: float = Field(description="errors / calls, 0..1")
    p95_ms: float | None = Field(
        description="p95 latency of the calls from log buckets (within ~9 %)"
    )
    mean_ms: float | None
    breakers: list[BreakerBadgeOut]
    trace_filter: dict[str, str] = Field(description="the trace search's GET parameters")


class ServiceMapOut(Schema):
    range: RangeKey
    since: datetime
    until: datetime
    caught_up: bool = Field(description="false while the rollup still has stored spans to fold")
    services: list[str]
    edges: list[EdgeOut]


@router.get(
    "",
    response={200: ServiceMapOut, **READ_ERRORS},
    summary="Service map",
    description="Calls between services over the range (parent/child spans across "
    "services, and CLIENT spans naming a peer), with rate, error rate, p95 latency and "
    "the live state of the circuit breakers on each edge.",
)
def service_map(request: HttpRequest, range: RangeKey = "15m") -> dict[str, Any]:  # noqa: A002
    now = timezone.now()
    caught = rollup(max_spans=ON_DEMAND_SPANS, blocking=False, now=now)
    found = selectors.service_map(range_key=range, now=now)
    return {
        "range": found.range,
        "since": found.since,
        "until": found.until,
        "caught_up": caught.caught_up,
        "services": list(found.services),
        "edges": [
            {
                "caller": e.caller,
                "callee": e.callee,
                "calls": e.calls,
                "errors": e.errors,
                "rate_per_s": e.rate_per_s,
                "error_rate": e.error_rate,
                "p95_ms": e.p95_ms,
                "mean_ms": e.mean_ms,
                "breakers": [
                    {"name": b.name, "state": b.state, "source": b.source} for b in e.breakers
                ],
                "trace_filter": e.trace_filter,
            }
            for e in found.edges
        ],
    }
