from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from .models import SpanRecord
from .services import delete_spans


@admin.register(SpanRecord)
class SpanRecordAdmin(admin.ModelAdmin[SpanRecord]):
    """Spans are telemetry: readable here, browsable in /traces/, never edited."""

    list_display = ["start", "name", "service", "kind", "status", "duration_us", "trace_link"]
    # Choice fields only: a filter on service or name would scan every span for its values.
    list_filter = ["status", "kind"]
    search_fields = ["=trace_id", "=span_id", "^name", "=service"]
    ordering = ["-start"]
    list_per_page = 100
    show_full_result_count = False

    @admin.display(description="trace")
    def trace_link(self, obj: SpanRecord) -> str:
        url = reverse("traces:trace", args=[obj.trace_id]) + f"?span={obj.span_id}"
        return format_html('<a href="{}">{}</a>', url, obj.trace_id[:12])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SpanRecord | None = None) -> bool:
        return False

    # A span deleted here updates the attribute index of its trace, as retention does.
    def delete_model(self, request: HttpRequest, obj: SpanRecord) -> None:
        delete_spans([obj.pk], using="default")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SpanRecord]) -> None:
        delete_spans(list(queryset.values_list("pk", flat=True)), using="default")
