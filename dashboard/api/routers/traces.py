from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest
from ninja import P, PathEx, Query, Router
from ninja.errors import HttpError

from dashboard.api.auth import require
from dashboard.api.errors import LOOKUP_ERRORS, READ_ERRORS, field_error
from dashboard.api.schemas import TRACE_ID_PATTERN, PageIn, TraceFilters, TraceOut, TracePageOut
from dashboard.traces.models import SpanRecord
from dashboard.traces.selectors import TraceQuery, search_traces, trace_detail
from dashboard.traces.waterfall import MAX_TRACE_SPANS

router = Router(tags=["traces"], auth=require())


def _utc(field: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise field_error("query", field, f"datetime out of range: {exc}") from exc


def _query(filters: TraceFilters, paging: PageIn) -> TraceQuery:
    attribute = None
    if filters.attribute.strip():
        key, sep, value = filters.attribute.strip().partition("=")
        if not sep or not key.strip():
            raise field_error("query", "attribute", "write the attribute filter as key=value")
        attribute = (key.strip(), value.strip())
    low, high = filters.min_duration_us, filters.max_duration_us
    if low is not None and high is not None and low > high:
        raise field_error("query", "max_duration_us", "must be >= min_duration_us")
    since, until = _utc("since", filters.since), _utc("until", filters.until)
    if since is not None and until is not None and since > until:
        raise field_error("query", "until", "must not be before since")
    return TraceQuery(
        service=filters.service.strip(),
        caller=filters.caller.strip(),
        name=filters.name.strip(),
        attribute=attribute,
        errors_only=filters.errors_only,
        min_duration_us=low,
        max_duration_us=high,
        since=since,
        until=until,
        sort=filters.sort,
        page=paging.page,
        per_page=paging.page_size,
    )


@router.get(
    "",
    response={200: TracePageOut, **READ_ERRORS},
    summary="Search traces",
    description="The trace browser's filters: a span of the trace must match service, "
    "caller, name and attribute together; durations and errors apply to the whole trace.",
)
def search(
    request: HttpRequest, filters: Query[TraceFilters], paging: Query[PageIn]
) -> dict[str, Any]:
    # The API has no chart: skip the selector's scatter-point query.
    found = search_traces(query=_query(filters, paging), chart_limit=0).page
    return {
        "items": found.rows,
        "page": found.page,
        "page_size": found.per_page,
        "total": found.total,
        "total_capped": found.total_capped,
        "has_next": found.has_next,
    }


@router.get(
    "/{trace_id}",
    response={200: TraceOut, **LOOKUP_ERRORS},
    summary="One trace: every span with parent links and durations",
    description=f"Spans depth-first (children by start time); at most {MAX_TRACE_SPANS}.",
)
def get_trace(
    request: HttpRequest,
    trace_id: PathEx[str, P(pattern=TRACE_ID_PATTERN, description="32 hex digits")],
) -> dict[str, Any]:
    trace_id = trace_id.lower()
    detail = trace_detail(trace_id=trace_id)
    if detail is None:
        raise HttpError(404, f"no trace {trace_id}")
    extra = {
        span_id: (attributes, events, links)
        for span_id, attributes, events, links in SpanRecord.objects.filter(trace_id=trace_id)
        .order_by("start", "id")
        .values_list("span_id", "attributes", "events", "links")[: MAX_TRACE_SPANS + 1]
    }
    none: tuple[dict[str, Any], list[Any], list[Any]] = ({}, [], [])
    spans = [
        {
            "span_id": row.span_id,
            "parent_span_id": row.parent_span_id,
            "name": row.name,
            "service": row.service,
            "kind": row.kind,
            "start": row.start,
            "duration_us": row.duration_us,
            "self_us": row.self_us,
            "depth": row.depth,
            "status": row.status,
            "status_message": row.status_message,
            "attributes": extra.get(row.span_id, none)[0] or {},
            "events": extra.get(row.span_id, none)[1] or [],
            "links": extra.get(row.span_id, none)[2] or [],
            "on_critical_path": bool(row.critical),
        }
        for row in detail.rows
    ]
    return {
        "trace_id": detail.trace_id,
        "start": detail.start,
        "duration_us": detail.duration_us,
        "span_count": detail.span_count,
        "error_count": detail.error_count,
        "services": detail.services,
        "max_depth": detail.max_depth,
        "truncated": detail.truncated,
        "spans": spans,
    }
