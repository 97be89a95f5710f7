from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("dashboard.live.urls")),
    path("traces/", include("dashboard.traces.urls")),
    path("service-map/", include("dashboard.servicemap.urls")),
    path("alerts/", include("dashboard.alerts.urls")),
    path("simulation/", include("dashboard.workflows.urls")),
    path("checkpoints/", include("dashboard.checkpoints.urls")),
    # /fleet/ pages and the workers' report endpoint /api/fleet/v1/report
    path("", include("dashboard.fleet.urls")),
    # /api/workflows/..., /api/observability/... and the Prometheus scrape endpoint /metrics
    path("", include("dashboard.api.urls")),
    # OTLP/HTTP receiver: POST /v1/traces
    path("", include("dashboard.ingest.urls")),
    path("admin/", admin.site.urls),
]
