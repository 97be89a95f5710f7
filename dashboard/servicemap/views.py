from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from dashboard.permissions import VIEW_DASHBOARD

from . import layout, selectors
from .rollup import rollup

#: Spans the page folds in before answering; the periodic rollup does the rest.
ON_DEMAND_SPANS = 20_000
POLL_SECONDS = 3


def map_context(*, range_key: str) -> dict[str, Any]:
    now = timezone.now()
    caught = rollup(max_spans=ON_DEMAND_SPANS, blocking=False, now=now)
    found = selectors.service_map(range_key=range_key, now=now)
    search = reverse("traces:search")
    drawing = layout.draw(list(found.services), list(found.edges))
    lines = [
        {
            "line": line,
            "edge": line.edge,
            "url": f"{search}?{urlencode(line.edge.trace_filter)}",
            "badges": [
                (badge, line.label_x - 75, line.label_y + 4 + i * 18, line.label_y + 16 + i * 18)
                for i, badge in enumerate(line.edge.breakers)
            ],
        }
        for line in drawing.lines
    ]
    return {
        "map": found,
        "drawing": drawing,
        "lines": lines,
        "caught_up": caught.caught_up,
        "range": range_key,
        "ranges": list(selectors.RANGE_LABELS.items()),
        "poll_seconds": POLL_SECONDS,
    }


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def service_map(request: HttpRequest) -> HttpResponse:
    range_key = request.GET.get("range") or selectors.DEFAULT_RANGE
    if range_key not in selectors.RANGES:
        return HttpResponse(
            f"range must be one of {', '.join(selectors.RANGES)}",
            status=400,
            content_type="text/plain",
        )
    context = map_context(range_key=range_key)
    if request.GET.get("partial"):
        return render(request, "dashboard/servicemap/_map.html", context)
    return render(request, "dashboard/servicemap/map.html", {**context, "nav": "servicemap"})
