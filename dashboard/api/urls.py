from __future__ import annotations

from django.urls import path

from .api import api, workflows_api
from .prometheus import metrics_view

urlpatterns = [
    # /api/workflows and /api/workflows/{id}[/execute] (no trailing slash on the list)
    path("api/", workflows_api.urls),
    path("api/observability/", api.urls),
    path("metrics", metrics_view, name="prometheus-metrics"),
]
