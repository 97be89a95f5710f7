"""The project's URLs plus the workflows app's (until the lead mounts them in dashboard/urls.py)."""

from __future__ import annotations

from typing import Any

from django.urls import include, path

from dashboard.urls import urlpatterns as project_urlpatterns
from dashboard.workflows.api import api as workflows_api

urlpatterns: list[Any] = [
    *project_urlpatterns,
    path("api/", workflows_api.urls),
    path("simulation/", include("dashboard.workflows.urls")),
]
