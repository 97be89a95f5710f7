from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import BreakerEvent


@admin.register(BreakerEvent)
class BreakerEventAdmin(admin.ModelAdmin[BreakerEvent]):
    """Breaker history is an audit trail: readable, never editable."""

    list_display = [
        "occurred_at",
        "breaker",
        "from_state",
        "to_state",
        "reason",
        "failure_count",
        "failure_rate",
        "actor",
        "process",
    ]
    list_filter = ["to_state", "from_state", "occurred_at", "breaker"]
    search_fields = ["breaker", "reason", "actor", "note"]
    date_hierarchy = "occurred_at"
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BreakerEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BreakerEvent | None = None) -> bool:
        return False
