"""A stored trace as OTLP/JSON, and an uploaded OTLP/JSON file as unsaved span records.

The download is an ``ExportTraceServiceRequest`` in the OTLP/JSON encoding: ids in
hex, 64-bit integers as strings, enums as integers, one ``resourceSpans`` per distinct
resource (its ``service.name`` included) with one ``scopeSpans`` (the instrumentation
scope is not stored). Any OTLP receiver, this dashboard's ``POST /v1/traces`` included,
reads it back.

An upload goes through the OTLP receiver's own decoder and converter (bounded gunzip,
JSON parse, id checks, attribute caps) and the span writer's masking, and is kept in
memory only: nothing reaches the database, so an uploaded file cannot pollute stored
traces, retention or search, and needs no permission beyond viewing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dashboard.ingest.decode import JSON, IngestError, gunzip, parse
from dashboard.ingest.spans import Limits, convert

from .convert import span_rows, to_datetime, to_us
from .masking import Masker
from .models import SpanKind, SpanRecord, SpanStatus

KIND_CODES: dict[str, int] = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
STATUS_CODES: dict[str, int] = {SpanStatus.UNSET: 0, SpanStatus.OK: 1, SpanStatus.ERROR: 2}
_GZIP_MAGIC = b"\x1f\x8b"


def any_value(value: Any) -> dict[str, Any]:
    """The OTLP/JSON AnyValue of a stored attribute value."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def key_values(mapping: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": any_value(value)} for key, value in (mapping or {}).items()]


def _nanos(us: int) -> str:
    return str(us * 1000)


def _span(record: SpanRecord) -> dict[str, Any]:
    start_us = to_us(record.start)
    span: dict[str, Any] = {
        "traceId": record.trace_id,
        "spanId": record.span_id,
        "name": record.name,
        "kind": KIND_CODES.get(record.kind, 1),
        "startTimeUnixNano": _nanos(start_us),
        "endTimeUnixNano": _nanos(start_us + record.duration_us),
        "attributes": key_values(record.attributes),
        "events": [
            {
                "timeUnixNano": _nanos(int(event.get("time_us", start_us))),
                "name": str(event.get("name", "")),
                "attributes": key_values(event.get("attributes")),
            }
            for event in record.events or []
            if isinstance(event, dict)
        ],
        "links": [
            {
                "traceId": str(link.get("trace_id", "")),
                "spanId": str(link.get("span_id", "")),
                "attributes": key_values(link.get("attributes")),
            }
            for link in record.links or []
            if isinstance(link, dict)
        ],
        "status": {"code": STATUS_CODES.get(record.status, 0)},
    }
    if record.parent_span_id:
        span["parentSpanId"] = record.parent_span_id
    if record.status_message:
        span["status"]["message"] = record.status_message
    return span


def export_trace(records: Iterable[SpanRecord]) -> dict[str, Any]:
    """An ExportTraceServiceRequest (OTLP/JSON) holding ``records``, grouped by resource."""
    groups: dict[bytes, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for record in records:
        resource = record.resource if isinstance(record.resource, dict) else {}
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS, default=str)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (resource, [])
        group[1].append(_span(record))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource)},
                "scopeSpans": [{"scope": {}, "spans": spans}],
            }
            for resource, spans in groups.values()
        ]
    }


@dataclass(slots=True)
class Uploaded:
    """The spans of an uploaded file, grouped by trace (file order), never saved."""

    traces: dict[str, list[SpanRecord]] = field(default_factory=dict)
    rejected: int = 0
    reasons: str = ""

    @property
    def span_count(self) -> int:
        return sum(len(spans) for spans in self.traces.values())


def read_upload(data: bytes, *, max_bytes: int, limits: Limits, masker: Masker) -> Uploaded:
    """Parse an OTLP/JSON file (gzip-compressed or not) into unsaved SpanRecords.

    Raises:
        IngestError: the file is too large (413), not gzip/JSON/OTLP (400), or holds no
            valid span (400).
    """
    if len(data) > max_bytes:
        raise IngestError(413, f"file exceeds the limit of {max_bytes} bytes")
    if data.startswith(_GZIP_MAGIC):
        data = gunzip(data, limit=max_bytes)
    message = parse(ExportTraceServiceRequest(), data, content_type=JSON)
    converted = convert(message.resource_spans, limits=limits, masker=masker)
    rows, _ = span_rows(converted.rows, masker)
    if not rows:
        reason = converted.error_message() or "it holds no spans"
        raise IngestError(400, f"no span to show: {reason}")
    result = Uploaded(rejected=converted.rejected, reasons=converted.error_message())
    for row in rows:
        record = SpanRecord(
            trace_id=row.trace_id,
            span_id=row.span_id,
            parent_span_id=row.parent_span_id,
            name=row.name,
            service=row.service,
            kind=row.kind,
            start=to_datetime(row.start_us),
            end=to_datetime(row.end_us),
            duration_us=row.end_us - row.start_us,
            status=row.status,
            status_message=row.status_message,
            attributes=row.attributes,
            events=row.events,
            links=row.links,
            resource=row.resource,
        )
        result.traces.setdefault(row.trace_id, []).append(record)
    for spans in result.traces.values():
        spans.sort(key=lambda record: record.start)
    return result
