from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from dashboard import selectors
from dashboard.breakers.models import BreakerEvent
from dashboard.fleet import selectors as fleet_selectors
from dashboard.live.fragments import to_json
from dashboard.live.runtime import sampler
from dashboard.permissions import VIEW_DASHBOARD
from dashboard.workflows.views import pattern_form_context


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def index(request: HttpRequest) -> HttpResponse:
    breakers = selectors.breaker_overview(history=0)
    limiters = selectors.limiter_overview()
    fleet_breakers = fleet_selectors.breaker_groups()
    fleet_limiters = fleet_selectors.limiter_groups()
    return render(
        request,
        "dashboard/index.html",
        {
            "nav": "overview",
            "live_socket": "/ws/live/overview/",
            "breakers": breakers,
            "limiters": limiters,
            "health": selectors.health(breakers),
            "counts": selectors.state_counts(breakers),
            "busiest": selectors.busiest_limiters(limiters),
            "limiter_count": len(limiters),
            "fleet_breakers": fleet_breakers,
            "fleet_limiters": fleet_limiters,
            "fleet_instances": len(
                {i["instance"] for g in fleet_breakers for i in g["instances"]}
                | {i["instance"] for g in fleet_limiters for i in g["instances"]}
            ),
            "transitions": list(BreakerEvent.objects.all()[:10]),
            "failures": sorted(
                (b for b in breakers if b["last_failure"]),
                key=lambda b: -b["last_failure"]["time"],
            )[:8],
            "error_spans": selectors.recent_error_spans(limit=8),
            "traces": selectors.recent_traces(limit=8),
            "json": to_json(list(sampler.samples)),
            **pattern_form_context(request),
        },
    )
