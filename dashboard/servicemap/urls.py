from __future__ import annotations

from django.urls import path

from . import views

app_name = "servicemap"
urlpatterns = [path("", views.service_map, name="map")]
