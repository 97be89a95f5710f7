"""The report endpoint workers POST to, and the Fleet pages (thin: selectors and services)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from dashboard.breakers.services import PERMISSIONS, Action
from dashboard.live import fragments
from dashboard.permissions import REPORT_FLEET, VIEW_DASHBOARD

from . import auth, checkpoints, conf, live, selectors, services
from .report import parse_report

VIEW = VIEW_DASHBOARD
REPORT = REPORT_FLEET


_error = auth.error


def _read_body(request: HttpRequest, what: str) -> tuple[auth.Reporter, bytes] | JsonResponse:
    """The reporter and the request's body, or the 401/403 (token), 400/413 (body larger
    than allowed) to answer."""
    found = auth.authorise(request)
    if isinstance(found, JsonResponse):
        return found
    limit = conf.max_report_bytes()
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "invalid Content-Length")
    if length > limit:
        return _error(413, f"a {what} must be at most {limit} bytes, got {length}")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, f"a {what} must be at most {limit} bytes")
    return found, body


INSTANCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_WAIT = 30.0


async def commands(request: HttpRequest) -> HttpResponse:
    """``GET /api/fleet/v1/commands?instance=ID&wait=SECONDS``: the HTTP long-poll.

    Answers at once with the instance's commands not yet delivered, else holds the
    request up to ``wait`` seconds (at most 30) and answers as soon as an operator's
    command for it commits (:func:`live.wake`, through the channel layer, so any server
    process may hold it); the Answer then carries the commands (``[]`` on timeout).
    The worker applies them and acks in its next report, sent at once.
    """
    if request.method != "GET":
        return _error(405, "GET only")
    reporter = await sync_to_async(auth.authorise)(request)
    if isinstance(reporter, JsonResponse):
        return reporter
    instance_id = request.GET.get("instance", "")
    if not INSTANCE_ID.fullmatch(instance_id):
        return _error(400, "instance: an instance id (1-64 of A-Z a-z 0-9 _ . : -) is required")
    try:
        wait = float(request.GET.get("wait", "0"))
    except ValueError:
        return _error(400, "wait: a number of seconds is required")
    if not 0 <= wait <= MAX_WAIT:  # also refuses nan
        return _error(400, f"wait: must be within 0..{MAX_WAIT:g} seconds")
    take = sync_to_async(services.take_new_commands)
    layer = get_channel_layer()
    found = await take(instance_id=instance_id)
    if found or wait == 0 or layer is None:
        return JsonResponse(services.answer(found))
    channel = await layer.new_channel()
    group = live.wake_group(instance_id)
    await layer.group_add(group, channel)
    try:
        found = await take(instance_id=instance_id)  # one may have committed meanwhile
        if not found:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(layer.receive(channel), wait)
                found = await take(instance_id=instance_id)
    finally:
        await layer.group_discard(group, channel)
    return JsonResponse(services.answer(found))


@csrf_exempt  # bearer-token only: no cookie is ever used, so there is nothing to forge
@require_POST
def report(request: HttpRequest) -> HttpResponse:
    """``POST /api/fleet/v1/report``: a worker's report in, its waiting commands out.

    A transition or an ack is pushed to the Fleet pages right after the report is
    stored, before the answer goes out.
    """
    read = _read_body(request, "report")
    if isinstance(read, JsonResponse):
        return read
    _, body = read
    try:
        parsed = parse_report(body)
    except ValueError as exc:
        return _error(400, str(exc))
    answer = services.ingest_report(report=parsed)
    if parsed.events or parsed.acks:
        changed = services.changed_breakers(parsed)
        live.push(changed)
        live.notify(changed)
    return JsonResponse(answer)


@csrf_exempt  # bearer-token only, like the report
@require_POST
def report_checkpoints(request: HttpRequest) -> HttpResponse:
    """``POST /api/fleet/v1/checkpoints``: a worker's checkpoint metadata (no blobs).

    403 (audited, nothing recorded) when a checkpoint belongs to a workflow or id that
    the token's user and the instance's service do not own (:mod:`.checkpoints`).
    """
    read = _read_body(request, "message")
    if isinstance(read, JsonResponse):
        return read
    found, body = read
    try:
        message = checkpoints.parse_message(body)
    except ValueError as exc:
        return _error(400, str(exc))
    user = get_user_model().objects.filter(pk=found.user_id, is_active=True).first()
    if user is None:  # deleted or deactivated since its token was checked
        return _error(401, "the token's user no longer exists or is inactive")
    try:
        return JsonResponse(checkpoints.record_checkpoints(message=message, user=user))
    except checkpoints.CheckpointsRefused as exc:
        return _error(403, exc.detail)


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
