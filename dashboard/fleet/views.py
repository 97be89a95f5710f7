"""The report endpoint workers POST to, and the Fleet pages (thin: selectors and services)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from dashboard.api.tokens import authenticate_token
from dashboard.breakers.services import PERMISSIONS, Action
from dashboard.live import fragments
from dashboard.permissions import REPORT_FLEET, VIEW_DASHBOARD

from . import conf, live, selectors, services
from .report import parse_report

VIEW = VIEW_DASHBOARD
REPORT = REPORT_FLEET


def _error(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fleet"'
    return response


@csrf_exempt  # bearer-token only: no cookie is ever used, so there is nothing to forge
@require_POST
def report(request: HttpRequest) -> HttpResponse:
    """``POST /api/fleet/v1/report``: a worker's report in, its waiting commands out."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        if request.user.is_authenticated:  # a browser session is never enough here
            return _error(403, f"send Authorization: Bearer <API token with {REPORT!r}>")
        return _error(401, f"send Authorization: Bearer <API token with {REPORT!r}>")
    found = authenticate_token(token.strip())
    if found is None:
        return _error(401, "invalid, expired or revoked API token")
    if not found.user.has_perm(REPORT):
        return _error(403, f"permission {REPORT!r} required")
    limit = conf.max_report_bytes()
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "invalid Content-Length")
    if length > limit:
        return _error(413, f"a report must be at most {limit} bytes, got {length}")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, f"a report must be at most {limit} bytes")
    try:
        parsed = parse_report(body)
    except ValueError as exc:
        return _error(400, str(exc))
    answer = services.ingest_report(report=parsed)
    if parsed.events or parsed.acks:
        live.notify(services.changed_breakers(parsed))
    return JsonResponse(answer)


@login_required
@permission_required(VIEW, raise_exception=True)
@require_GET
def fleet(request: HttpRequest) -> HttpResponse:
    partial = request.GET.get("partial") == "1"
    context: dict[str, Any] = {
        "nav": "fleet",
        "live_socket": "/ws/fleet/",
        "groups": selectors.breaker_groups(),
        "limiters": selectors.limiter_groups(),
        "can": {action: request.user.has_perm(perm) for action, perm in PERMISSIONS.items()},
    }
    template = "_breaker_groups.html" if partial else "fleet.html"
    return render(request, f"dashboard/fleet/{template}", context)


@login_required
@permission_required(VIEW, raise_exception=True)
@require_GET
def instances(request: HttpRequest) -> HttpResponse:
    partial = request.GET.get("partial") == "1"
    context = {"nav": "fleet", "instances": selectors.instances()}
    template = "_instance_rows.html" if partial else "instances.html"
    return render(request, f"dashboard/fleet/{template}", context)


def _result(message: str, *, status: int) -> HttpResponse:
    html = fragments.action_result(ok=status < 400, message=message)
    return HttpResponse(html, status=status)


@require_POST
def breaker_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """Queue reset / force open / disable for every live instance holding ``name``.

    Answers with a fragment for the page's result area (errors too, with their 4xx),
    as the server's own breaker actions do; the reason comes from ``hx-prompt``.
    """
    if action not in PERMISSIONS:
        raise Http404(f"unknown action {action!r}")
    chosen: Action = action
    noun = chosen.replace("_", " ")
    if not request.user.is_authenticated:
        return _result("Your session has ended: reload the page and log in again.", status=403)
    if not (request.user.has_perm(VIEW) and request.user.has_perm(PERMISSIONS[chosen])):
        return _result(f"You do not have permission to {noun} circuit breakers.", status=403)
    reason = (request.headers.get("HX-Prompt") or request.POST.get("reason") or "").strip()
    if not reason:
        return _result(f"Give a reason to {noun} “{name}”: it is audited.", status=400)
    try:
        result = services.act_on_fleet_breaker(
            name=name,
            action=chosen,
            user=request.user,
            reason=reason,
            source="dashboard",
            instance_id=request.POST.get("instance") or None,
        )
    except services.FleetBreakerNotFound:
        return _result(f"No live instance holds a breaker named “{name}”.", status=404)
    except ValueError as exc:
        return _result(str(exc), status=400)
    sent, unreachable = len(result["instances"]), len(result["unreachable"])
    message = (
        f"{noun.capitalize()} “{name}” by {request.user.get_username()}: “{reason}”. "
        f"Sent to {sent} instance{'s' if sent != 1 else ''}"
        + (f"; {unreachable} unreachable (stale)" if unreachable else "")
        + (" (shared through Redis: once)" if result["shared"] else "")
        + ". Each row shows when it is applied."
    )
    return _result(message, status=202 if sent else 409)


@login_required
@permission_required(VIEW, raise_exception=True)
@require_GET
def protocol_schema(request: HttpRequest) -> HttpResponse:
    """The protocol's JSON Schema (behind a login, like the API docs)."""
    from resilience.fleet.protocol import schema

    return HttpResponse(json.dumps(schema(), indent=2), content_type="application/schema+json")
