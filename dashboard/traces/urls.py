from __future__ import annotations

from django.urls import path

from . import views

app_name = "traces"
urlpatterns = [
    path("", views.search, name="search"),
    path("<str:trace_id>/", views.trace, name="trace"),
    path("<str:trace_id>/spans/<str:span_id>/", views.span, name="span"),
]
