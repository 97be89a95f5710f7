"""The project's URLs plus the alerts page and API (until the lead mounts them)."""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from ninja import NinjaAPI

from dashboard.alerts.api import router
from dashboard.api.errors import install_handlers
from dashboard.urls import urlpatterns as project_urlpatterns

api = NinjaAPI(urls_namespace="alerts-test-api", docs_url=None)
install_handlers(api)
api.add_router("/alerts", router)

urlpatterns: list[Any] = [
    *project_urlpatterns,
    path("alerts/", include("dashboard.alerts.urls")),
    path("alerts-test/api/observability/", api.urls),
]
