from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Model, QuerySet, URLField
from django.http import HttpRequest
from django.utils.html import format_html_join

from dashboard import audit

from .models import Alert, AlertRule, Delivery, NotificationChannel, new_secret

_ModelAdmin = admin.ModelAdmin[Any]
_TabularInline = admin.TabularInline[Any, Any]


class _Audited(_ModelAdmin):
    """Rules and channels change who gets paged: every change goes to the audit trail."""

    audit_name = ""

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit.record(
            user=request.user,
            source="admin",
            action=f"alerts.{self.audit_name}.{'change' if change else 'add'}",
            target=str(obj),
            details={"fields": sorted(form.changed_data)} if form is not None else {},
        )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        target = str(obj)
        super().delete_model(request, obj)
        audit.record(
            user=request.user,
            source="admin",
            action=f"alerts.{self.audit_name}.delete",
            target=target,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        # The changelist's "delete selected" bypasses delete_model: audit each row.
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


@admin.register(AlertRule)
class AlertRuleAdmin(_Audited):
    audit_name = "rule"
    list_display = [
        "name",
        "kind",
        "severity",
        "enabled",
        "for_seconds",
        "cooldown_seconds",
        "last_evaluated_at",
        "last_error",
    ]
    list_filter = ["kind", "severity", "enabled"]
    search_fields = ["name", "last_error"]
    filter_horizontal = ["channels"]
    readonly_fields = ["last_error", "last_evaluated_at", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "parameters", "severity", "enabled"]}),
        ("Timing", {"fields": ["for_seconds", "cooldown_seconds"]}),
        ("Notify", {"fields": ["channels"]}),
        ("Status", {"fields": ["last_error", "last_evaluated_at", "created_at", "updated_at"]}),
    ]


EDIT_CHANNELS = "alerts.change_notificationchannel"


@admin.register(NotificationChannel)
class NotificationChannelAdmin(_Audited):
    """The signing secret is generated, shown once after creation (like API tokens) and
    never again; "Rotate signing secret" makes and shows a new one."""

    audit_name = "channel"
    list_display = ["name", "kind", "enabled", "url", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "url", "recipients"]
    exclude = ["secret"]
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    readonly_fields = ["recent_failures"]
    actions = ["rotate_secret"]

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change and isinstance(obj, NotificationChannel) and obj.kind == obj.Kind.WEBHOOK:
            _show_secret(request, obj)

    @admin.action(description="Rotate signing secret (shown once)", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for channel in queryset.filter(kind=NotificationChannel.Kind.WEBHOOK):
            channel.secret = new_secret()
            channel.save(update_fields=["secret"])
            audit.record(
                user=request.user,
                source="admin",
                action="alerts.channel.rotate_secret",
                target=str(channel),
            )
            _show_secret(request, channel)

    @admin.display(description="Recent failed deliveries (full detail)")
    def recent_failures(self, obj: NotificationChannel) -> str:
        rows = Delivery.objects.filter(channel=obj, outcome=Delivery.Outcome.FAILED)[:10]
        return (
            format_html_join(
                "\n",
                "<div>{}: {}</div>",
                ((row.created_at, row.detail or row.error) for row in rows),
            )
            or "—"
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The detail of a failure (which port refused, which status) is for editors only.
        return (
            ["recent_failures"] if obj is not None and request.user.has_perm(EDIT_CHANNELS) else []
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        fields = [str(f) for f in super().get_fields(request, obj) if f != "recent_failures"]
        return [*fields, *self.get_readonly_fields(request, obj)]


def _show_secret(request: HttpRequest, channel: NotificationChannel) -> None:
    messages.warning(
        request,
        f"Signing secret of {channel.name!r}. Copy it now, it will not be shown again: "
        f"{channel.secret}",
    )


class DeliveryInline(_TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ["event", "channel_name", "outcome", "attempts", "error", "created_at", "finished_at"]
    readonly_fields = [
        "event",
        "channel_name",
        "outcome",
        "attempts",
        "error",
        "created_at",
        "finished_at",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(_ModelAdmin):
    """The history is written by the evaluator; here it is read-only."""

    list_display = ["rule", "subject", "state", "severity", "started_at", "ended_at", "value"]
    list_filter = ["state", "severity", "rule"]
    search_fields = ["subject", "message", "rule__name"]
    date_hierarchy = "started_at"
    inlines = [DeliveryInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(_ModelAdmin):
    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if request.user.has_perm(EDIT_CHANNELS) else ["detail"]

    list_display = ["alert", "event", "channel_name", "outcome", "attempts", "created_at"]
    list_filter = ["outcome", "event", "channel_name"]
    search_fields = ["channel_name", "error"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
