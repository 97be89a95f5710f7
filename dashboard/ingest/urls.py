from __future__ import annotations

from django.urls import path

from . import views

app_name = "ingest"
urlpatterns = [
    # The OTLP/HTTP path: OTEL_EXPORTER_OTLP_ENDPOINT=http://host:8000 appends it.
    path("v1/traces", views.traces, name="traces"),
    path("v1/metrics", views.metrics_view, name="metrics"),
]
