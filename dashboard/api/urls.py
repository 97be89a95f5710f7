from __future__ import annotations

from django.urls import path

from .api import api
from .prometheus import metrics_view

urlpatterns = [
    path("api/observability/", api.urls),
    path("metrics", metrics_view, name="prometheus-metrics"),
]
