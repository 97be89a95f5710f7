from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.durations import format_duration
from resilience.checkpoint import NAME_PATTERN
from resilience.errors import CheckpointError

from . import retention, selectors, services
from .admin_filters import RecentWorkflowFilter
from .forms import CleanupForm
from .models import Checkpoint

MAX_VERIFY = 500
MAX_DOWNLOAD = 100
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
PREVIEW_IDS = 100
PLAN_SALT = "dashboard.checkpoints.cleanup-plan"
PLAN_MAX_AGE = 3600


def _ids_text(ids: Sequence[str], limit: int = 20) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin[Checkpoint]):
    """Checkpoints are written by the manager: browse, verify, download, delete, clean up."""

    list_display = [
        "checkpoint_id",
        "agent_id",
        "workflow_id",
        "created_at",
        "codec",
        "raw_size_display",
        "stored_size_display",
        "ratio_display",
        "timeline_link",
    ]
    list_filter = ["agent_id", RecentWorkflowFilter, "created_at", "codec"]
    search_fields = ["^checkpoint_id", "agent_id", "workflow_id"]
    date_hierarchy = "created_at"
    ordering = ["-checkpoint_id"]
    list_per_page = 100
    show_full_result_count = False
    actions = ["verify_integrity", "download_state", "cleanup_redirect"]
    fieldsets = [
        (
            None,
            {"fields": ["checkpoint_id", "agent_id", "workflow_id", "created_at", "created_ts"]},
        ),
        (
            "Storage",
            {
                "fields": [
                    "codec",
                    "raw_size_display",
                    "stored_size_display",
                    "ratio_display",
                    "sha256",
                    "storage_path",
                ]
            },
        ),
        ("Metadata", {"fields": ["metadata_display"]}),
        ("State", {"fields": ["state_display"]}),
    ]
    readonly_fields = [
        "checkpoint_id",
        "agent_id",
        "workflow_id",
        "created_at",
        "created_ts",
        "codec",
        "raw_size_display",
        "stored_size_display",
        "ratio_display",
        "sha256",
        "storage_path",
        "metadata_display",
        "state_display",
    ]

    # -- permissions: rows come from the manager, never from a form ---------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Checkpoint | None = None) -> bool:
        return False

    # -- columns and detail fields --------------------------------------------------------

    @admin.display(description="raw size", ordering="raw_size")
    def raw_size_display(self, obj: Checkpoint) -> str:
        return filesizeformat(obj.raw_size)

    @admin.display(description="stored size", ordering="stored_size")
    def stored_size_display(self, obj: Checkpoint) -> str:
        return filesizeformat(obj.stored_size)

    @admin.display(description="ratio")
    def ratio_display(self, obj: Checkpoint) -> str:
        return f"{obj.ratio:.2f}×"

    @admin.display(description="time travel")
    def timeline_link(self, obj: Checkpoint) -> SafeString:
        return format_html(
            '<a href="{}?agent={}">timeline</a> · <a href="{}">state</a>',
            reverse("checkpoints:timeline", args=[obj.workflow_id]),
            obj.agent_id,
            reverse("checkpoints:state", args=[obj.checkpoint_id]),
        )

    @admin.display(description="metadata")
    def metadata_display(self, obj: Checkpoint) -> SafeString:
        text = orjson.dumps(obj.metadata, option=orjson.OPT_INDENT_2).decode()
        return format_html('<pre class="checkpoint-json">{}</pre>', text)

    @admin.display(description="state")
    def state_display(self, obj: Checkpoint) -> SafeString:
        preview = selectors.state_preview(checkpoint=obj)
        if preview.status == "corrupted":
            return format_html(
                '<p class="errornote"><strong>corrupted</strong>: the blob failed verification, '
                "its content is not shown.</p><p>{}</p>",
                preview.detail,
            )
        if preview.status == "missing":
            return format_html('<p class="errornote"><strong>missing</strong>: {}</p>', "no blob")
        if preview.status == "too_large":
            return format_html(
                "<p>Too large to show ({}); use the download action.</p>",
                filesizeformat(obj.raw_size),
            )
        notice = (
            format_html(
                '<p class="help"><strong>Truncated</strong>: showing the first {} of {} '
                "characters; use the download action for the full state.</p>",
                f"{len(preview.text):,}",
                f"{preview.total_chars:,}",
            )
            if preview.truncated
            else ""
        )
        return format_html(
            '{}<pre class="checkpoint-state" style="max-height:40em;overflow:auto">{}</pre>',
            notice,
            preview.text,
        )

    # -- deletion goes through services (row, then blob on commit) ------------------------

    def delete_model(self, request: HttpRequest, obj: Checkpoint) -> None:
        # CheckpointError: deleted meanwhile, the outcome the user asked for.
        with contextlib.suppress(CheckpointError):
            services.delete_checkpoint(
                checkpoint_id=obj.checkpoint_id, actor=request.user, source="admin"
            )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        services.delete_checkpoints(
            checkpoint_ids=list(queryset.values_list("checkpoint_id", flat=True)),
            actor=request.user,
            source="admin",
        )

    # -- actions --------------------------------------------------------------------------

    @admin.action(description="Verify integrity of selected checkpoints", permissions=["view"])
    def verify_integrity(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        ids = list(
            queryset.order_by("checkpoint_id").values_list("checkpoint_id", flat=True)[
                : MAX_VERIFY + 1
            ]
        )
        if len(ids) > MAX_VERIFY:
            self.message_user(
                request,
                f"Select at most {MAX_VERIFY} checkpoints to verify here "
                "(use `manage.py checkpoints verify` for all).",
                messages.ERROR,
            )
            return
        ok: list[str] = []
        for checkpoint_id, status in selectors.verify_many(checkpoint_ids=ids):
            if status == "ok":
                ok.append(checkpoint_id)
            elif status == "corrupted":
                self.message_user(request, f"corrupted: {checkpoint_id}", messages.ERROR)
            else:
                self.message_user(
                    request, f"corrupted (blob missing): {checkpoint_id}", messages.ERROR
                )
        if ok:
            self.message_user(request, f"ok ({len(ok)}): {', '.join(ok)}", messages.SUCCESS)

    @admin.action(
        description="Download decoded state as JSON (several: a zip)", permissions=["view"]
    )
    def download_state(
        self, request: HttpRequest, queryset: QuerySet[Checkpoint]
    ) -> HttpResponse | None:
        rows = list(queryset.order_by("checkpoint_id")[: MAX_DOWNLOAD + 1])
        if len(rows) > MAX_DOWNLOAD:
            self.message_user(
                request, f"Select at most {MAX_DOWNLOAD} checkpoints to download.", messages.ERROR
            )
            return None
        if sum(row.raw_size for row in rows) > MAX_DOWNLOAD_BYTES:
            self.message_user(
                request,
                f"The selected states exceed {filesizeformat(MAX_DOWNLOAD_BYTES)}; select fewer.",
                messages.ERROR,
            )
            return None
        files: list[tuple[str, bytes]] = []
        bad: list[str] = []
        for row in rows:
            try:
                files.append(
                    (row.checkpoint_id, selectors.state_json(checkpoint_id=row.checkpoint_id))
                )
            except CheckpointError:
                bad.append(row.checkpoint_id)
        if bad:
            self.message_user(
                request,
                f"Nothing downloaded: corrupted or missing: {_ids_text(bad)}",
                messages.ERROR,
            )
            return None
        if len(files) == 1:
            checkpoint_id, data = files[0]
            response = HttpResponse(data, content_type="application/json")
            filename = f"{checkpoint_id}.json"
        else:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for checkpoint_id, data in files:
                    archive.writestr(f"{checkpoint_id}.json", data)
            response = HttpResponse(buffer.getvalue(), content_type="application/zip")
            filename = f"checkpoints-{len(files)}.zip"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'  # ids are ASCII
        return response

    @admin.action(
        description="Clean up old checkpoints (all agents and workflows)…", permissions=["delete"]
    )
    def cleanup_redirect(
        self, request: HttpRequest, queryset: QuerySet[Checkpoint]
    ) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:checkpoints_checkpoint_cleanup"))

    # -- cleanup page: form → preview (dry run) → confirm ---------------------------------

    def get_urls(self) -> list[URLPattern]:
        cleanup = path(
            "cleanup/",
            self.admin_site.admin_view(self.cleanup_view),
            name="checkpoints_checkpoint_cleanup",
        )
        return [cleanup, *super().get_urls()]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            "can_cleanup": self.has_delete_permission(request),
            **retention.admin_context(),
            **(extra_context or {}),
        }
        workflow_id = request.GET.get("workflow_id__exact", "")
        if NAME_PATTERN.fullmatch(workflow_id):
            extra["timeline"] = (workflow_id, reverse("checkpoints:timeline", args=[workflow_id]))
        return super().changelist_view(request, extra)

    def cleanup_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_delete_permission(request):
            raise PermissionDenied
        form = CleanupForm(request.POST if request.method == "POST" else None)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Clean up checkpoints",
            "form": form,
            "totals": selectors.totals(),
        }
        if request.method == "POST" and form.is_valid():
            keep_last: int | None = form.cleaned_data["keep_last"]
            older_than: timedelta | None = form.cleaned_data["older_than"]
            reason: str = form.cleaned_data["reason"]
            params = {
                "keep_last": keep_last,
                "older_than": None if older_than is None else older_than.total_seconds(),
                "user": request.user.pk,
            }
            if "confirm" in request.POST:
                planned = self._planned_ids(request.POST.get("plan", ""), params)
                if planned is not None:
                    return self._run_cleanup(request, planned, keep_last, older_than, reason)
                self.message_user(
                    request,
                    "The preview expired or its rules changed; check the new preview.",
                    messages.WARNING,
                )
            preview = services.cleanup(keep_last=keep_last, older_than=older_than, dry_run=True)
            context.update(
                preview=preview,
                preview_ids=preview.checkpoint_ids[:PREVIEW_IDS],
                plan=signing.dumps(
                    {**params, "ids": list(preview.checkpoint_ids)}, salt=PLAN_SALT, compress=True
                ),
                rules=self._rules_text(keep_last, older_than),
            )
        return TemplateResponse(request, "admin/checkpoints/checkpoint/cleanup.html", context)

    def _planned_ids(self, token: str, params: dict[str, Any]) -> list[str] | None:
        try:
            plan = signing.loads(token, salt=PLAN_SALT, max_age=PLAN_MAX_AGE)
        except signing.BadSignature:
            return None
        if not isinstance(plan, dict) or any(
            plan.get(key) != value for key, value in params.items()
        ):
            return None
        ids = plan.get("ids")
        return ids if isinstance(ids, list) else None

    @staticmethod
    def _rules_text(keep_last: int | None, older_than: timedelta | None) -> str:
        rules = []
        if keep_last is not None:
            rules.append(f"keep the last {keep_last} per agent/workflow")
        if older_than is not None:
            rules.append(f"older than {format_duration(older_than)}")
        return ", ".join(rules)

    def _run_cleanup(
        self,
        request: HttpRequest,
        planned: list[str],
        keep_last: int | None,
        older_than: timedelta | None,
        reason: str,
    ) -> HttpResponse:
        result = services.cleanup(
            keep_last=keep_last,
            older_than=older_than,
            only=planned,
            actor=request.user,
            reason=reason,
            source="admin",
        )
        rules = self._rules_text(keep_last, older_than)
        if result.count and request.user.pk is not None:
            message = f"Cleanup ({rules})" + (f": {reason}" if reason else "")
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=[Checkpoint(checkpoint_id=i) for i in result.checkpoint_ids],
                action_flag=DELETION,
                change_message=message,
            )
        skipped = len(planned) - result.count
        self.message_user(
            request,
            f"Removed {result.count} checkpoint{'s' if result.count != 1 else ''} "
            f"({filesizeformat(result.stored_bytes)}; {rules})"
            + (f": {_ids_text(result.checkpoint_ids)}" if result.count else "")
            + (f". {skipped} previewed checkpoints were already gone or kept." if skipped else "."),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:checkpoints_checkpoint_changelist"))
