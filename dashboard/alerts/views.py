from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from dashboard.permissions import VIEW_DASHBOARD

from . import selectors
from .models import Alert

RECENT = 50


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def index(request: HttpRequest) -> HttpResponse:
    """Rules with their status and last error, and the most recent alerts.

    htmx polls the same URL; it gets the content fragment only.
    """
    state = request.GET.get("state", "")
    if state not in Alert.State.values:
        state = ""
    context = {
        "rules": selectors.rule_statuses(),
        "alerts": list(selectors.list_alerts(state=state or None)[:RECENT]),
        "state": state,
        "states": Alert.State.choices,
        "nav": "alerts",
    }
    htmx = getattr(request, "htmx", False)
    template = "dashboard/alerts/_content.html" if htmx else "dashboard/alerts/index.html"
    return render(request, template, context)
