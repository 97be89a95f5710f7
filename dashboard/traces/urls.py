from __future__ import annotations

from django.urls import path

from . import views

app_name = "traces"
urlpatterns = [
    path("", views.search, name="search"),
    path("find/", views.find, name="find"),
    path("upload/", views.upload, name="upload"),
    path("<str:trace_id>/", views.trace, name="trace"),
    path("<str:trace_id>/otlp.json", views.download, name="download"),
    path("<str:trace_id>/compare/", views.compare, name="compare"),
    path("<str:trace_id>/spans/<str:span_id>/", views.span, name="span"),
]
