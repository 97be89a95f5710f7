"""Checkpoint time travel pages: timeline, state, diff, resume from here, fork.

Reading needs ``dashboard.view_dashboard``; resuming ``checkpoints.resume_checkpoint``
and ``workflows.execute_workflow``; forking ``checkpoints.fork_checkpoint``. Mutations
are POSTs (CSRF) and audited by the services they call.
"""

from __future__ import annotations

from typing import Any

import orjson
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.permissions import EXECUTE_WORKFLOW, FORK_CHECKPOINT, VIEW_DASHBOARD
from dashboard.workflows import gate
from dashboard.workflows.engine import NotResumable, WorkflowBusy
from dashboard.workflows.resume import MAX_REASON, RESUME, resume_workflow
from resilience.checkpoint import CHECKPOINT_ID_PATTERN, NAME_PATTERN
from resilience.errors import CheckpointCorruptedError, CheckpointError, CheckpointNotFoundError

from . import jsontree, selectors, timeline
from .forks import ForkError, check_new_workflow_id, fork_checkpoint
from .models import Checkpoint, CheckpointFork
from .statediff import render_folded

VIEW = VIEW_DASHBOARD
EXECUTE = EXECUTE_WORKFLOW
FORK = FORK_CHECKPOINT
EDIT_MAX_BYTES = 2 * 1024 * 1024
"""States up to this size (raw JSON) can be edited in the fork form."""


def _workflow_id(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise Http404("a workflow id is 1-128 letters, digits or _ . : @ -")
    return value


def _checkpoint(checkpoint_id: str) -> Checkpoint:
    if not CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id):
        raise Http404("a checkpoint id looks like ck_<14 hex>_<12 hex>")
    row = selectors.get_checkpoint(checkpoint_id=checkpoint_id)
    if row is None:
        raise Http404(f"no checkpoint {checkpoint_id}")
    return row


def timeline_url(workflow_id: str, agent_id: str | None = None) -> str:
    url = reverse("checkpoints:timeline", args=[workflow_id])
    return f"{url}?agent={agent_id}" if agent_id else url


def _permissions(request: HttpRequest) -> dict[str, bool]:
    return {
        "can_resume": request.user.has_perm(RESUME) and request.user.has_perm(EXECUTE),
        "can_fork": request.user.has_perm(FORK),
    }


@require_GET
@login_required
@permission_required(VIEW, raise_exception=True)
def timeline_view(request: HttpRequest, workflow_id: str) -> HttpResponse:
    agent = request.GET.get("agent", "")
    if agent and not NAME_PATTERN.fullmatch(agent):
        agent = ""
    newest_first = request.GET.get("order", "newest") != "oldest"
    found = timeline.timeline(
        workflow_id=_workflow_id(workflow_id),
        agent_id=agent or None,
        page=request.GET.get("page", "1"),
        newest_first=newest_first,
    )
    rows = found.rows
    context: dict[str, Any] = {
        "tl": found,
        "order": "newest" if newest_first else "oldest",
        "default_a": rows[1].checkpoint.checkpoint_id if len(rows) > 1 else "",
        "default_b": rows[0].checkpoint.checkpoint_id if rows else "",
        "verify_ids": ",".join(r.checkpoint.checkpoint_id for r in rows),
        **_permissions(request),
    }
    return render(request, "dashboard/checkpoints/timeline.html", context)


@require_GET
@login_required
@permission_required(VIEW, raise_exception=True)
def verify_view(request: HttpRequest) -> HttpResponse:
    ids = request.GET.get("ids", "").split(",")
    return render(
        request,
        "dashboard/checkpoints/_verified.html",
        {"results": timeline.verify_ids(checkpoint_ids=ids)},
    )


@require_GET
@login_required
@permission_required(VIEW, raise_exception=True)
def state_view(request: HttpRequest, checkpoint_id: str) -> HttpResponse:
    row = _checkpoint(checkpoint_id)
    query = request.GET.get("q", "").strip()[:200]
    context: dict[str, Any] = {
        "ck": row,
        "query": query,
        "lineage": timeline.lineage(workflow_id=row.workflow_id),
        "forks": list(CheckpointFork.objects.filter(parent_checkpoint_id=row.checkpoint_id)),
        "previous": selectors.list_checkpoints(agent_id=row.agent_id, workflow_id=row.workflow_id)
        .filter(checkpoint_id__lt=row.checkpoint_id)
        .first(),
        "metadata": orjson.dumps(row.metadata, option=orjson.OPT_INDENT_2).decode(),
        "timeline_url": timeline_url(row.workflow_id, row.agent_id),
        "reason_max": MAX_REASON,
        **_permissions(request),
    }
    status = 200
    if row.raw_size > selectors.DECODE_MAX_BYTES:
        context["error"] = (
            f"This state holds {row.raw_size:,} bytes of JSON: too large to show here; "
            "download it from the checkpoint admin."
        )
    else:
        try:
            state = selectors.load_state(checkpoint_id=row.checkpoint_id)
        except CheckpointCorruptedError as exc:
            context["error"] = f"corrupted: {exc}; its content is not shown"
            status = 409
        except CheckpointNotFoundError:
            context["error"] = "missing: the blob of this checkpoint is gone"
            status = 404
        else:
            context["tree"] = jsontree.render_tree(state)
            if query:
                context["matches"], context["more_matches"] = jsontree.search_state(state, query)
    return render(request, "dashboard/checkpoints/state.html", context, status=status)


@require_GET
@login_required
@permission_required(VIEW, raise_exception=True)
def diff_view(request: HttpRequest) -> HttpResponse:
    a = _checkpoint(request.GET.get("a", ""))
    b = _checkpoint(request.GET.get("b", ""))
    context: dict[str, Any] = {"a": a, "b": b, "timeline_url": timeline_url(a.workflow_id)}
    status = 200
    try:
        comparison = timeline.compare(a=a, b=b)
    except timeline.NotComparable as exc:
        context["error"], status = str(exc), 400
    except CheckpointCorruptedError as exc:
        context["error"], status = f"corrupted: {exc}; nothing was decoded", 409
    except CheckpointNotFoundError as exc:
        context["error"], status = f"missing: {exc}", 404
    else:
        diff = comparison.diff
        context.update(
            diff=diff,
            changes=diff.changes[:500],
            more_changes=max(len(diff.changes) - 500, 0),
            folded=render_folded(comparison.state_a, comparison.state_b, diff),
        )
    return render(request, "dashboard/checkpoints/diff.html", context, status=status)


class ResumeForm(forms.Form):
    reason = forms.CharField(max_length=MAX_REASON, strip=True)


@require_POST
@login_required
@permission_required([VIEW, RESUME, EXECUTE], raise_exception=True)
def resume_view(request: HttpRequest, checkpoint_id: str) -> HttpResponse:
    row = _checkpoint(checkpoint_id)
    form = ResumeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a reason to resume from this checkpoint.")
        return redirect("checkpoints:state", row.checkpoint_id)
    wait = gate.admit(f"user:{request.user.pk}")  # the same budget as the API's execute
    if wait is not None:
        messages.error(request, f"Execution budget spent ({gate.NAME}): retry in {wait:.0f} s.")
        return redirect("checkpoints:state", row.checkpoint_id)
    try:
        run = resume_workflow(
            workflow_id=row.workflow_id,
            checkpoint_id=row.checkpoint_id,
            user=request.user,
            reason=form.cleaned_data["reason"],
            source="dashboard",
        )
    except (NotResumable, CheckpointError, WorkflowBusy, ValueError) as exc:
        messages.error(request, f"Not resumed: {exc}")
        return redirect("checkpoints:state", row.checkpoint_id)
    messages.success(
        request,
        f"Run #{run.pk} of {row.workflow_id} from step {run.start_step}: "
        f"{run.get_status_display()} at step {run.step}/{run.total_steps}.",
    )
    return redirect(timeline_url(row.workflow_id, row.agent_id))


class ForkForm(forms.Form):
    new_workflow_id = forms.CharField(max_length=128, strip=True, label="New workflow id")
    state = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "json-editor"}),
        help_text="JSON; leave unchanged to copy the state as it is",
        max_length=EDIT_MAX_BYTES * 2,
    )
    reason = forms.CharField(max_length=MAX_REASON, required=False, strip=True)

    def __init__(self, *args: Any, parent: Checkpoint, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parent = parent

    def clean_new_workflow_id(self) -> str:
        value: str = self.cleaned_data["new_workflow_id"]
        try:
            return check_new_workflow_id(value, parent_workflow_id=self.parent.workflow_id)
        except ForkError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_state(self) -> Any:
        text: str = self.cleaned_data["state"]
        if not text.strip():
            return None
        try:
            return {"value": orjson.loads(text)}
        except orjson.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc


def _suggested_id(parent: Checkpoint) -> str:
    base = parent.workflow_id[:100]
    for n in range(1, 1000):
        candidate = f"{base}.fork-{n}"
        try:
            return check_new_workflow_id(candidate, parent_workflow_id=parent.workflow_id)
        except ForkError:
            continue
    return f"{base}.fork"


@require_http_methods(["GET", "POST"])
@login_required
@permission_required([VIEW, FORK], raise_exception=True)
def fork_view(request: HttpRequest, checkpoint_id: str) -> HttpResponse:
    parent = _checkpoint(checkpoint_id)
    editable = parent.raw_size <= EDIT_MAX_BYTES
    status = 200
    if request.method == "POST":
        form = ForkForm(request.POST, parent=parent)
        if form.is_valid():
            edited = form.cleaned_data["state"] if editable else None
            kwargs: dict[str, Any] = {} if edited is None else {"state": edited["value"]}
            try:
                fork = fork_checkpoint(
                    checkpoint_id=parent.checkpoint_id,
                    new_workflow_id=form.cleaned_data["new_workflow_id"],
                    actor=request.user,
                    reason=form.cleaned_data["reason"],
                    source="dashboard",
                    **kwargs,
                )
            except ForkError as exc:
                form.add_error("new_workflow_id", str(exc))
            except (CheckpointError, TypeError) as exc:
                form.add_error(None, f"Not forked: {exc}")
            else:
                edits = f"; edited {', '.join(fork.edited_paths[:10])}" if fork.edited else ""
                messages.success(
                    request,
                    f"Forked {parent.checkpoint_id} as {fork.workflow_id} "
                    f"(checkpoint {fork.checkpoint_id}{edits}).",
                )
                return redirect(timeline_url(fork.workflow_id, fork.agent_id))
        status = 400
    else:
        initial: dict[str, Any] = {"new_workflow_id": _suggested_id(parent)}
        if editable:
            try:
                state = selectors.load_state(checkpoint_id=parent.checkpoint_id)
            except CheckpointError as exc:
                messages.error(request, f"Cannot fork: {exc}")
                return redirect("checkpoints:state", parent.checkpoint_id)
            initial["state"] = orjson.dumps(state, option=orjson.OPT_INDENT_2).decode()
        form = ForkForm(initial=initial, parent=parent)
    if not editable:
        form.fields["state"].widget = forms.HiddenInput()
    return render(
        request,
        "dashboard/checkpoints/fork.html",
        {"parent": parent, "form": form, "editable": editable},
        status=status,
    )
