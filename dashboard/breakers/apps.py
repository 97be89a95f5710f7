from __future__ import annotations

from django.apps import AppConfig


class BreakersConfig(AppConfig):
    name = "dashboard.breakers"
    label = "breakers"
    verbose_name = "Circuit breakers"
    default_auto_field = "django.db.models.BigAutoField"
