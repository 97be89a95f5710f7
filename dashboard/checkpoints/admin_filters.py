"""Admin list filters that stay short however many checkpoints there are."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Max, QuerySet
from django.http import HttpRequest

from .models import Checkpoint

RECENT_WORKFLOWS = 15


class RecentWorkflowFilter(admin.SimpleListFilter):
    """The most recently checkpointed workflows (the search box finds any other one)."""

    title = f"workflow (latest {RECENT_WORKFLOWS}; search for others)"
    parameter_name = "workflow_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = (
            Checkpoint.objects.values("workflow_id")
            .annotate(newest=Max("checkpoint_id"))
            .order_by("-newest")
            .values_list("workflow_id", flat=True)[:RECENT_WORKFLOWS]
        )
        values = list(recent)
        chosen = self.value()
        if chosen and chosen not in values:
            values.insert(0, chosen)  # keep the current choice visible
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(workflow_id=value) if value else queryset
