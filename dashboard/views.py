from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard import selectors


@login_required
@permission_required("dashboard.view_dashboard", raise_exception=True)
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/index.html",
        {
            "breakers": selectors.breaker_overview(history=5),
            "limiters": selectors.limiter_overview(),
        },
    )
