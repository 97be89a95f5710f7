from __future__ import annotations

from django.urls import path

from . import views

app_name = "fleet"
urlpatterns = [
    path("fleet/", views.fleet, name="breakers"),
    path("fleet/instances/", views.instances, name="instances"),
    path("fleet/breakers/<path:name>/<slug:action>/", views.breaker_action, name="breaker-action"),
    path("api/fleet/v1/report", views.report, name="report"),
    path("api/fleet/v1/checkpoints", views.report_checkpoints, name="checkpoints"),
    path("api/fleet/v1/commands", views.commands, name="commands"),
    path("api/fleet/v1/schema.json", views.protocol_schema, name="schema"),
]
