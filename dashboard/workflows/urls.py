from __future__ import annotations

from django.urls import path

from . import views

app_name = "workflows"

urlpatterns = [
    path("", views.simulation, name="simulation"),
    path("panel/", views.panel, name="panel"),
    path("pattern/", views.set_pattern, name="set-pattern"),
]
