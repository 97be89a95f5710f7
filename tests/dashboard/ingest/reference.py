"""The previous ingest path, kept as the reference the fast path is tested against:
OTLP ResourceSpans → SDK ReadableSpans, which the span writer then masks and converts
(``dashboard.traces.convert.span_rows``). ``dashboard.ingest.spans`` builds the same
rows directly; test_rows.py checks they are equal, row for row and once stored.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from dashboard.ingest.spans import Limits
from dashboard.traces.masking import MASK, Masker

UNKNOWN_SERVICE = "unknown_service"
_MAX_DEPTH = 8
_NAME_LENGTH = 255
_KINDS = {
    1: trace.SpanKind.INTERNAL,
    2: trace.SpanKind.SERVER,
    3: trace.SpanKind.CLIENT,
    4: trace.SpanKind.PRODUCER,
    5: trace.SpanKind.CONSUMER,
}
_REMOTE_KINDS = (trace.SpanKind.SERVER, trace.SpanKind.CONSUMER)
# SpanFlags in trace.proto: bit 8 says whether bit 9 (parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class _Resource:
    """What the span writer reads of a Resource. The SDK's Resource drops map values."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, attributes: dict[str, Any], schema_url: str) -> None:
        self.attributes = attributes
        self.schema_url = schema_url


@dataclass(slots=True)
class Converted:
    spans: list[ReadableSpan] = field(default_factory=list)
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count

    def error_message(self) -> str:
        return "; ".join(f"{count} {reason}" for reason, count in self.reasons.items())


class TruncatingMasker(Masker):
    """The writer's Masker, truncating each masked string to ``max_length``: the old path
    with the SDK's truncation moved after masking (strings are masked whole)."""

    __slots__ = ("_max_length",)

    def __init__(self, keys: Iterable[str], *, max_length: int) -> None:
        super().__init__(keys)
        self._max_length = max_length

    def mask_text(self, text: str, _depth: int = 0) -> str:
        masked = super().mask_text(text, _depth)
        return masked[: self._max_length] if _depth == 0 else masked


def _without_nul(value: str) -> str:
    return value.replace("\0", "") if "\0" in value else value


def _text(value: str, limit: int) -> str:
    if "\0" in value:
        value = value.replace("\0", "")
    return value[:limit]


class _Values:
    def __init__(self, limits: Limits, masker: Masker) -> None:
        self._limits = limits
        self._masker = masker

    def value(self, any_value: AnyValue, depth: int) -> Any:
        kind = any_value.WhichOneof("value")
        if kind == "string_value":
            return _without_nul(any_value.string_value)  # truncated by TruncatingMasker
        if kind in ("bool_value", "int_value"):
            return getattr(any_value, kind)
        if kind == "double_value":
            number = any_value.double_value
            return number if math.isfinite(number) else str(number)
        if kind == "bytes_value":
            raw = any_value.bytes_value[: self._limits.max_value_length]
            return base64.b64encode(raw).decode()
        if depth >= _MAX_DEPTH:
            return "<nested too deeply>"
        if kind == "array_value":
            values = any_value.array_value.values
            return [self.value(v, depth + 1) for v in values[: self._limits.max_attributes]]
        if kind == "kvlist_value":
            return self.attributes(any_value.kvlist_value.values, depth + 1)
        return None

    def attributes(self, pairs: Iterable[KeyValue], depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        limit, length = self._limits.max_attributes, self._limits.max_value_length
        for pair in pairs:
            if len(out) >= limit:
                break
            key = _text(pair.key, length)
            if self._masker.is_sensitive(pair.key):
                out[key] = MASK
            else:
                out[key] = self.value(pair.value, depth)
        return out


def _context(trace_id: bytes, span_id: bytes, *, remote: bool) -> SpanContext:
    return SpanContext(
        int.from_bytes(trace_id, "big"),
        int.from_bytes(span_id, "big"),
        is_remote=remote,
        trace_flags=_SAMPLED,
    )


def _invalid(span: Span) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "spans with an invalid traceId (16 bytes, not all zero)"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "spans with an invalid spanId (8 bytes, not all zero)"
    if len(span.parent_span_id) not in (0, 8):
        return "spans with an invalid parentSpanId (8 bytes or empty)"
    if span.start_time_unix_nano == 0:
        return "spans without startTimeUnixNano"
    return None


def _span(span: Span, resource: Resource, values: _Values, limits: Limits) -> ReadableSpan:
    kind = _KINDS.get(span.kind, trace.SpanKind.INTERNAL)
    parent = None
    if any(span.parent_span_id):
        if span.flags & _HAS_IS_REMOTE:
            remote = bool(span.flags & _IS_REMOTE)
        else:
            remote = kind in _REMOTE_KINDS
        parent = _context(span.trace_id, span.parent_span_id, remote=remote)
    code = span.status.code
    if code == 2:
        status = Status(StatusCode.ERROR, _without_nul(span.status.message))
    else:
        status = Status(StatusCode.OK if code == 1 else StatusCode.UNSET)
    events = [
        Event(
            _text(event.name, _NAME_LENGTH),
            values.attributes(event.attributes),
            event.time_unix_nano or span.start_time_unix_nano,
        )
        for event in span.events[: limits.max_events]
    ]
    return ReadableSpan(
        name=_text(span.name, _NAME_LENGTH),
        context=_context(span.trace_id, span.span_id, remote=False),
        parent=parent,
        resource=resource,
        attributes=values.attributes(span.attributes),
        events=events,
        kind=kind,
        status=status,
        start_time=span.start_time_unix_nano,
        end_time=span.end_time_unix_nano or span.start_time_unix_nano,
    )


def convert(
    resource_spans: Iterable[ResourceSpans], *, limits: Limits, masker: Masker
) -> Converted:
    """ReadableSpans for every valid span (up to ``limits.max_spans``), and what was rejected."""
    result = Converted()
    values = _Values(limits, masker)
    for group in resource_spans:
        attributes = values.attributes(group.resource.attributes)
        service = attributes.get("service.name")
        if not isinstance(service, str) or not service:
            attributes["service.name"] = UNKNOWN_SERVICE
        resource = cast(Resource, _Resource(attributes, _text(group.schema_url, 2048)))
        for scope in group.scope_spans:
            for span in scope.spans:
                if len(result.spans) >= limits.max_spans:
                    result.reject(f"spans beyond the limit of {limits.max_spans} per request")
                    continue
                reason = _invalid(span)
                if reason is not None:
                    result.reject(reason)
                    continue
                result.spans.append(_span(span, resource, values, limits))
    return result
