from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "dashboard.api"
    label = "api"
    verbose_name = "Observability API"
    default_auto_field = "django.db.models.BigAutoField"
