from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import WorkflowRun


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin[WorkflowRun]):
    """Runs are written by the engine only: readable here, never edited."""

    list_display = [
        "started_at",
        "workflow_id",
        "status",
        "step",
        "total_steps",
        "agent",
        "start_step",
        "resumed_from",
        "last_checkpoint_id",
        "caller",
    ]
    list_filter = ["status", "started_at"]
    search_fields = ["workflow_id", "trace_id", "last_checkpoint_id", "resumed_from", "caller"]
    date_hierarchy = "started_at"
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkflowRun | None = None) -> bool:
        return False
