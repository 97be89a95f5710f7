"""Websocket routes: one consumer per live page."""

from __future__ import annotations

from django.urls import URLPattern, path

from dashboard.fleet.live import FleetConsumer
from dashboard.live import consumers

websocket_urlpatterns: list[URLPattern] = [
    path("ws/live/overview/", consumers.OverviewConsumer.as_asgi()),
    path("ws/live/breakers/", consumers.BreakersConsumer.as_asgi()),
    path("ws/live/limiters/", consumers.LimitersConsumer.as_asgi()),
    path("ws/live/metrics/", consumers.MetricsConsumer.as_asgi()),
    path("ws/fleet/", FleetConsumer.as_asgi()),
]
