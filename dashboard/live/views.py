"""The live pages and the breaker action endpoint (thin: selectors read, services write)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST, require_safe

from dashboard import selectors
from dashboard.breakers import recorder, services
from dashboard.ingest.metrics import latest_series
from dashboard.permissions import VIEW_DASHBOARD

from . import fragments
from .runtime import sampler

ACTION_WORDS = {"reset": "Reset", "force_open": "Forced open", "disable": "Disabled"}
ACTION_NOUNS = {"reset": "reset", "force_open": "force open", "disable": "disable"}


def _page(request: HttpRequest, template: str, nav: str, **context: Any) -> HttpResponse:
    return render(
        request,
        f"dashboard/live/{template}",
        {"nav": nav, "live_socket": f"/ws/live/{nav}/", **context},
    )


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def breakers(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "breakers.html",
        "breakers",
        breakers=selectors.breaker_cards(history=10),
        actions=fragments.actions_for(request.user.has_perm),
    )


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def limiters(request: HttpRequest) -> HttpResponse:
    rows = [
        {**lim, "allowed_rate": None, "rejected_rate": None} for lim in selectors.limiter_overview()
    ]
    return _page(request, "limiters.html", "limiters", limiters=rows)


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def metrics(request: HttpRequest) -> HttpResponse:
    keep = sampler.samples.maxlen or 300
    return _page(
        request,
        "metrics.html",
        "metrics",
        json=fragments.to_json(list(sampler.samples)),
        minutes=round(keep * sampler.interval / 60),
        series=latest_series(),  # OTLP /v1/metrics, by service and instance
    )


def _result(
    message: str, *, status: int, card: selectors.BreakerCard | None = None
) -> HttpResponse:
    ok = status < 400
    return HttpResponse(fragments.action_result(ok=ok, message=message, card=card), status=status)


@require_POST
def breaker_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """Reset / force open / disable one breaker; answers with a fragment for the card.

    Errors are fragments too (with their 4xx status), so the card says what went wrong.
    """
    if action not in services.PERMISSIONS:
        raise Http404(f"unknown action {action!r}")
    noun = ACTION_NOUNS[action]
    if not request.user.is_authenticated:
        # Not a redirect: htmx would swap the whole login page into the card.
        return _result("Your session has ended: reload the page and log in again.", status=403)
    if not request.user.has_perm(VIEW_DASHBOARD) or not request.user.has_perm(
        services.PERMISSIONS[action]
    ):
        return _result(f"You do not have permission to {noun} circuit breakers.", status=403)
    reason = (request.headers.get("HX-Prompt") or request.POST.get("reason") or "").strip()
    if not reason:
        return _result(
            f"Give a reason to {noun} “{name}”: it is recorded in the history.", status=400
        )
    try:
        services.act_on_breaker(
            name=name, action=action, user=request.user, reason=reason, source="dashboard"
        )
    except services.BreakerNotFound:
        return _result(f"No circuit breaker named “{name}” in this process.", status=404)
    except ValueError as exc:
        return _result(str(exc), status=400)
    recorder.flush(2.0)
    cards = selectors.breaker_cards(history=10, names=[name])
    card = cards[0] if cards else None
    state = card.state.value.replace("_", " ").upper() if card else "?"
    who = request.user.get_username()
    message = f"{ACTION_WORDS[action]} by {who}: “{reason}”. Now {state}."
    return _result(message, status=200, card=card)
