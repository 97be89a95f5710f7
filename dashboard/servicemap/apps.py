from __future__ import annotations

from django.apps import AppConfig


class ServiceMapConfig(AppConfig):
    name = "dashboard.servicemap"
    label = "servicemap"
    verbose_name = "Service map"
    default_auto_field = "django.db.models.BigAutoField"
