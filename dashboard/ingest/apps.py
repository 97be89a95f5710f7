from __future__ import annotations

from django.apps import AppConfig


class IngestConfig(AppConfig):
    """OTLP/HTTP receiver: spans from other processes and services (``POST /v1/traces``)."""

    name = "dashboard.ingest"
    label = "ingest"
    verbose_name = "OTLP ingest"
