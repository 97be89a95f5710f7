from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "dashboard.api"
    label = "api"
    verbose_name = "Observability API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from resilience import telemetry

        from . import collectors

        # Span pipeline, checkpoint verification and retention counters on /metrics.
        collectors.register(telemetry.metrics.registry)

        # resilience4j's Grafana dashboard selects on Micrometer's `application` tag.
        collector = telemetry.metrics.collector
        if collector is not None:
            collector.application = getattr(settings, "METRICS_APPLICATION", None) or None
