from __future__ import annotations

from django.urls import path

from . import views

app_name = "live"
urlpatterns = [
    path("breakers/", views.breakers, name="breakers"),
    path("breakers/<path:name>/<slug:action>/", views.breaker_action, name="breaker-action"),
    path("limiters/", views.limiters, name="limiters"),
    path("charts/", views.metrics, name="metrics"),
]
