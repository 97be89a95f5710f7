from __future__ import annotations

import re
from typing import Any

import orjson
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_safe

from dashboard.durations import format_us
from dashboard.ingest import conf as ingest_conf
from dashboard.ingest.decode import IngestError
from dashboard.ingest.spans import Limits
from dashboard.permissions import VIEW_DASHBOARD
from resilience.checkpoint import NAME_PATTERN

from . import charts, conf, otlp_json, selectors
from .compare import DEFAULT_THRESHOLD
from .compare import compare as compare_traces
from .convert import MAX_LINKS, to_us
from .forms import TraceSearchForm
from .masking import Masker
from .models import SpanRecord
from .selectors import SORTS
from .waterfall import MAX_TRACE_SPANS, build_detail

_TRACE_ID = re.compile(r"[0-9a-f]{32}\Z")
_TRACE_ID_16 = re.compile(r"[0-9a-f]{16}\Z")
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
        "links": [
            {
                "trace_id": str(link.get("trace_id", "")),
                "span_id": str(link.get("span_id", "")),
                "same_trace": link.get("trace_id") == span.trace_id,
                "url": _link_url(link),
                "attributes": _items(link.get("attributes")),
            }
            for link in (span.links or [])[:MAX_LINKS]
            if isinstance(link, dict)
        ],
    }


def _link_url(link: dict[str, Any]) -> str:
    trace_id, span_id = link.get("trace_id"), link.get("span_id")
    if not isinstance(trace_id, str) or not _TRACE_ID.match(trace_id):
        return ""
    url = reverse("traces:trace", args=[trace_id])
    if isinstance(span_id, str) and _SPAN_ID.match(span_id):
        url += f"?span={span_id}"
    return url


def normalize_trace_id(text: str) -> str | None:
    """The canonical id (32 lowercase hex digits) that ``text`` spells, or None.

    Upper case and surrounding blanks are accepted, and a 16-digit (64-bit, Zipkin
    style) id is zero-padded on the left, as OpenTelemetry's Zipkin and B3 propagators
    do. An all-zero id is invalid in W3C Trace Context.
    """
    value = text.strip().lower()
    if _TRACE_ID_16.match(value):
        value = value.rjust(32, "0")
    if not _TRACE_ID.match(value) or not value.strip("0"):
        return None
    return value


def _not_found(
    request: HttpRequest, message: str, *, query: str = "", status: int = 404
) -> HttpResponse:
    context = {"message": message, "query": query[:100]}
    return render(request, "dashboard/traces/not_found.html", context, status=status)


def _checked_trace_id(trace_id: str) -> str:
    if not _TRACE_ID.match(trace_id):
        raise Http404("a trace id is 32 lowercase hex digits")
    return trace_id


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def find(request: HttpRequest) -> HttpResponse:
    """The nav's search box: a trace id, typed or pasted, to its trace page."""
    text = request.GET.get("id", "")
    trace_id = normalize_trace_id(text)
    if trace_id is None:
        message = (
            "Type a trace id: 32 hex digits (or 16, Zipkin style)."
            if not text.strip()
            else "That is not a trace id: a trace id is 32 hex digits (or 16, Zipkin style)."
        )
        return _not_found(request, message, query=text, status=400)
    if not SpanRecord.objects.filter(trace_id=trace_id).exists():
        return _not_found(
            request,
            f"No spans are stored for trace {trace_id}: it may never have reached this "
            "server, or retention has deleted it.",
            query=text,
        )
    return redirect("traces:trace", trace_id=trace_id)


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
    canonical = normalize_trace_id(trace_id)
    if canonical is None:
        return _not_found(request, "That is not a trace id: 32 hex digits.", query=trace_id)
    if canonical != trace_id:
        query = request.GET.urlencode()
        url = reverse("traces:trace", args=[canonical])
        return redirect(f"{url}?{query}" if query else url)
    detail = selectors.trace_detail(trace_id=trace_id)
    if detail is None:
        return _not_found(request, f"No spans are stored for trace {trace_id}.", query=trace_id)
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
        "tools": True,
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


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def download(request: HttpRequest, trace_id: str) -> HttpResponse:
    """The trace as an OTLP/JSON ExportTraceServiceRequest file."""
    canonical = normalize_trace_id(trace_id)
    if canonical is None or canonical != trace_id:
        return _not_found(request, "That is not a trace id: 32 lowercase hex digits.")
    records = list(
        SpanRecord.objects.filter(trace_id=trace_id).order_by("start", "id")[:MAX_TRACE_SPANS]
    )
    if not records:
        return _not_found(request, f"No spans are stored for trace {trace_id}.", query=trace_id)
    body = orjson.dumps(otlp_json.export_trace(records))
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="trace-{trace_id}.json"'
    return response


def _upload_limits() -> Limits:
    return Limits(
        max_spans=conf.upload_max_spans(),
        max_attributes=ingest_conf.max_attributes(),
        max_events=ingest_conf.max_events(),
        max_value_length=ingest_conf.max_value_length(),
    )


def _upload_form(request: HttpRequest, error: str = "", status: int = 200) -> HttpResponse:
    context = {"error": error, "max_bytes": conf.upload_max_bytes()}
    return render(request, "dashboard/traces/upload.html", context, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def upload(request: HttpRequest) -> HttpResponse:
    """Show an OTLP/JSON file (e.g. a download from here or Jaeger) without storing it.

    POST only renders (CSRF-checked like any POST): nothing is written, so the view
    permission is all it takes.
    """
    if request.method != "POST":
        return _upload_form(request)
    limit = conf.upload_max_bytes()
    try:
        declared = int(request.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    # The multipart envelope adds a little to the file: refuse before parsing only
    # what cannot fit; the file's own size is checked below.
    if declared > limit + 64 * 1024:
        return _upload_form(request, f"The file is larger than {limit} bytes.", status=413)
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return _upload_form(request, "Choose an OTLP/JSON file to upload.", status=400)
    if uploaded.size is None or uploaded.size > limit:
        return _upload_form(request, f"The file is larger than {limit} bytes.", status=413)
    try:
        found = otlp_json.read_upload(
            uploaded.read(limit + 1),
            max_bytes=limit,
            limits=_upload_limits(),
            masker=Masker(conf.masked_keys(), conf.masked_value_patterns()),
        )
    except IngestError as exc:
        return _upload_form(request, f"This file cannot be shown: {exc.message}", exc.status)
    trace_id, records = next(iter(found.traces.items()))
    rows = [
        (r.span_id, r.parent_span_id, r.name, r.service, r.kind, r.start, r.duration_us)
        + (r.status, r.status_message)
        for r in records
    ]
    detail = build_detail(trace_id=trace_id, found=rows)
    by_id = {record.span_id: record for record in records}
    selected = by_id.get(detail.root.span_id) if detail.root is not None else None
    context: dict[str, Any] = {
        "trace": detail,
        "panel": _span_panel(selected or records[0]),
        "uploaded": {
            "name": (uploaded.name or "")[:200],
            "other_traces": len(found.traces) - 1,
            "rejected": found.rejected,
            "reasons": found.reasons,
        },
        "panels": [_span_panel(record) for record in by_id.values()],
    }
    # A resource is shared by many spans: shown once below the waterfall, not in every
    # span's panel, so a file's page grows with the file, not with spans x resource.
    resources: dict[int, list[tuple[str, str]]] = {}
    for panel in [context["panel"], *context["panels"]]:
        resources.setdefault(id(panel["span"].resource), panel["resource"])
        panel["resource"] = []
    context["resources"] = list(resources.values())
    return render(request, "dashboard/traces/trace.html", context)


@require_safe
@login_required
@permission_required(VIEW_DASHBOARD, raise_exception=True)
def compare(request: HttpRequest, trace_id: str) -> HttpResponse:
    """This trace and another side by side: matched spans, their durations, what differs."""
    canonical = normalize_trace_id(trace_id)
    if canonical is None or canonical != trace_id:
        return _not_found(request, "That is not a trace id: 32 lowercase hex digits.")
    detail_a = selectors.trace_detail(trace_id=trace_id)
    if detail_a is None:
        return _not_found(request, f"No spans are stored for trace {trace_id}.", query=trace_id)
    text = request.GET.get("with", "")
    context: dict[str, Any] = {"a": detail_a, "query": text[:100], "comparison": None}
    try:
        percent = float(request.GET.get("threshold", "") or DEFAULT_THRESHOLD * 100)
    except ValueError:
        percent = -1.0
    if not 0 <= percent <= 1000:
        context["error"] = "The threshold is a percentage between 0 and 1000."
        return render(request, "dashboard/traces/compare.html", context, status=400)
    context["threshold"] = f"{percent:g}"
    if not text.strip():
        return render(request, "dashboard/traces/compare.html", context)
    other = normalize_trace_id(text)
    if other is None:
        context["error"] = "That is not a trace id: 32 hex digits (or 16, Zipkin style)."
        return render(request, "dashboard/traces/compare.html", context, status=400)
    detail_b = selectors.trace_detail(trace_id=other)
    if detail_b is None:
        context["error"] = f"No spans are stored for trace {other}."
        return render(request, "dashboard/traces/compare.html", context, status=404)
    context["comparison"] = compare_traces(detail_a, detail_b, threshold=percent / 100)
    return render(request, "dashboard/traces/compare.html", context)
