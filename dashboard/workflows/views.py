"""The Simulation page: the fake services, their breakers, the load and recent runs.

Operators holding ``workflows.operate_simulation`` change a service's failure pattern
(htmx POST with CSRF, audited) to watch the system react.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import audit
from dashboard.fleet import selectors as fleet_selectors
from dashboard.permissions import OPERATE_SIMULATION, VIEW_DASHBOARD
from resilience.circuit_breaker import circuit_breaker_registry

from . import actions, gate, loadgen, patterns, selectors, simulated


class PatternForm(forms.Form):
    service = forms.ChoiceField(choices=())
    pattern = forms.ChoiceField(choices=[(c, c) for c in actions.CHOICES])
    reason = forms.CharField(required=False, max_length=audit.MAX_REASON, strip=True)

    def __init__(self, *args: Any, world: simulated.ServiceWorld, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["service"].choices = [(name, name) for name in world.names()]  # type: ignore[attr-defined]


def _panel_context() -> dict[str, Any]:
    # The "Now/Calls/Failures" columns are this server's own world (the workflow API,
    # RESILIENCE_DEMO); the workers' side is their breakers as the fleet reports them
    # and which workers applied the page's choice.
    world = simulated.world()
    rows = world.snapshot()
    live = {item["id"] for item in fleet_selectors.instances() if item["status"] != "gone"}
    appliers = patterns.appliers(live=live)
    groups = {group["name"]: group for group in fleet_selectors.breaker_groups()}
    chosen = {row.service: row for row in patterns.desired()}
    for row in rows:
        breaker = circuit_breaker_registry.get(row["name"])
        row["breaker"] = breaker.snapshot() if breaker is not None else None
        row["fleet"] = groups.get(row["name"])
        row["workers"] = appliers.get(row["name"], {"applied": [], "pending": []})
        stored = chosen.get(row["name"])
        row["chosen"] = (
            None if stored is None else {"choice": stored.choice, "version": stored.version}
        )
    generator = loadgen.current()
    return {
        "services": rows,
        "limiter": gate.limiter().snapshot(top=5),
        "loadgen": generator.snapshot() if generator is not None else None,
        "runs": selectors.recent_runs(limit=15),
    }


def pattern_form_context(request: HttpRequest) -> dict[str, Any]:
    """What ``_pattern_form.html`` needs (the simulation page and the overview use it)."""
    return {
        "form": PatternForm(world=simulated.world()),
        "can_operate": request.user.has_perm(OPERATE_SIMULATION),
        "presets": {name: p.describe() for name, p in simulated.PRESETS.items()},
    }


@require_GET
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def simulation(request: HttpRequest) -> HttpResponse:
    context = {**_panel_context(), **pattern_form_context(request)}
    return render(request, "dashboard/workflows/simulation.html", context)


@require_GET
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def panel(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/workflows/_panel.html", _panel_context())


@require_POST
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
@permission_required(OPERATE_SIMULATION, raise_exception=True)
def set_pattern(request: HttpRequest) -> HttpResponse:
    form = PatternForm(request.POST, world=simulated.world())
    error = ""
    row: dict[str, Any] | None = None
    if form.is_valid():
        try:
            row = actions.change_service_pattern(
                name=form.cleaned_data["service"],
                choice=form.cleaned_data["pattern"],
                reason=form.cleaned_data["reason"],
                user=request.user,
                source="dashboard",
            )
        except ValueError as exc:
            error = str(exc)
    else:
        error = "; ".join(
            f"{field}: {' '.join(str(m) for m in errs)}" for field, errs in form.errors.items()
        )
    message = "" if row is None else f"{row['name']} is now {row['description']}."
    if not request.htmx:  # type: ignore[attr-defined]
        if error:
            messages.error(request, error)
        else:
            messages.success(request, message)
        return redirect("workflows:simulation")
    response = render(
        request,
        "dashboard/workflows/_feedback.html",
        {"error": error, "message": message},
        status=400 if error else 200,
    )
    if not error:
        response["HX-Trigger"] = "simulation-changed"
    return response
