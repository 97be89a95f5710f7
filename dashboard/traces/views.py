from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from dashboard.durations import format_us
from dashboard.permissions import VIEW_DASHBOARD
from resilience.checkpoint import NAME_PATTERN

from . import charts, selectors
from .convert import to_us
from .forms import TraceSearchForm
from .models import SpanRecord
from .selectors import SORTS

_TRACE_ID = re.compile(r"[0-9a-f]{32}\Z")
_SPAN_ID = re.compile(r"[0-9a-f]{16}\Z")


def _url(request: HttpRequest, **changes: object) -> str:
    params = request.GET.copy()
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    encoded = params.urlencode()
    return f"{request.path}?{encoded}" if encoded else request.path


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def search(request: HttpRequest) -> HttpResponse:
    form = TraceSearchForm(request.GET)
    context: dict[str, Any] = {"form": form, "page": None, "chart": None}
    if form.is_valid():
        query = form.to_query(now=timezone.now())
        found = selectors.search_traces(query=query)
        page = found.page
        context["page"] = page
        context["chart"] = charts.scatter(found.points)
        context["sort"] = query.sort
        context["previous_url"] = _url(request, page=page.page - 1) if page.has_previous else ""
        context["next_url"] = _url(request, page=page.page + 1) if page.has_next else ""
        context["sort_links"] = [
            (key, label, _url(request, sort=key, page=None), key == query.sort)
            for key, (label, _, _) in SORTS.items()
        ]
    context["services"] = selectors.distinct_values(field_name="service")
    context["names"] = selectors.distinct_values(field_name="name")
    return render(request, "dashboard/traces/search.html", context)


def _display(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_display(item) for item in value)
    return str(value)


def _items(mapping: dict[str, Any] | None) -> list[tuple[str, str]]:
    return sorted((str(key), _display(value)) for key, value in (mapping or {}).items())


def _span_panel(span: SpanRecord) -> dict[str, Any]:
    start_us = to_us(span.start)
    events, exceptions = [], []
    for event in span.events or []:
        attributes = dict(event.get("attributes") or {})
        offset = format_us(max(int(event.get("time_us", start_us)) - start_us, 0))
        if event.get("name") == "exception":
            exceptions.append(
                {
                    "offset": offset,
                    "type": attributes.pop("exception.type", ""),
                    "message": attributes.pop("exception.message", ""),
                    "stacktrace": attributes.pop("exception.stacktrace", ""),
                    "attributes": _items(attributes),
                }
            )
        else:
            events.append(
                {
                    "offset": offset,
                    "name": event.get("name", ""),
                    "attributes": _items(attributes),
                }
            )
    return {
        "span": span,
        "duration": format_us(span.duration_us),
        "attributes": _items(span.attributes),
        "resource": _items(span.resource),
        "events": events,
        "exceptions": exceptions,
    }


def _checked_trace_id(trace_id: str) -> str:
    if not _TRACE_ID.match(trace_id):
        raise Http404("a trace id is 32 lowercase hex digits")
    return trace_id


def _workflow_timelines(trace_id: str) -> list[tuple[str, str]]:
    """(workflow id, checkpoint timeline URL) of the workflow.execute spans of a trace."""
    found: dict[str, str] = {}
    rows = SpanRecord.objects.filter(trace_id=trace_id, name="workflow.execute")
    for attributes in rows.values_list("attributes", flat=True)[:10]:
        workflow_id = (attributes or {}).get("workflow.id")
        if isinstance(workflow_id, str) and NAME_PATTERN.fullmatch(workflow_id):
            found[workflow_id] = reverse("checkpoints:timeline", args=[workflow_id])
    return sorted(found.items())


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def trace(request: HttpRequest, trace_id: str) -> HttpResponse:
    detail = selectors.trace_detail(trace_id=_checked_trace_id(trace_id))
    if detail is None:
        raise Http404("no spans are stored for this trace")
    wanted = request.GET.get("span", "")
    span = None
    if _SPAN_ID.match(wanted):
        span = selectors.span_record(trace_id=trace_id, span_id=wanted)
    if span is None:
        selected = selectors.first_error_span_id(trace_id=trace_id) or (
            detail.root.span_id if detail.root else ""
        )
        span = selectors.span_record(trace_id=trace_id, span_id=selected)
    context: dict[str, Any] = {
        "trace": detail,
        "panel": _span_panel(span) if span is not None else None,
        "span_url_prefix": reverse("traces:trace", args=[trace_id]) + "spans/",
        "workflow_timelines": _workflow_timelines(trace_id),
    }
    return render(request, "dashboard/traces/trace.html", context)


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def span(request: HttpRequest, trace_id: str, span_id: str) -> HttpResponse:
    if not _SPAN_ID.match(span_id):
        raise Http404("a span id is 16 lowercase hex digits")
    record = selectors.span_record(trace_id=_checked_trace_id(trace_id), span_id=span_id)
    if record is None:
        raise Http404("no such span in this trace")
    return render(request, "dashboard/traces/_span_detail.html", {"panel": _span_panel(record)})
