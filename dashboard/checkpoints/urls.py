from __future__ import annotations

from django.urls import path

from . import views

app_name = "checkpoints"

urlpatterns = [
    path("workflows/<str:workflow_id>/", views.timeline_view, name="timeline"),
    path("verify/", views.verify_view, name="verify"),
    path("diff/", views.diff_view, name="diff"),
    path("<str:checkpoint_id>/", views.state_view, name="state"),
    path("<str:checkpoint_id>/resume/", views.resume_view, name="resume"),
    path("<str:checkpoint_id>/fork/", views.fork_view, name="fork"),
]
