from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "dashboard.fleet"
    label = "fleet"
    verbose_name = "Fleet (worker processes)"
    default_auto_field = "django.db.models.BigAutoField"
