"""OTLP ResourceSpans → SpanRows, masked: what the span writer stores, with no SDK objects.

Ingested spans join the server's own spans in the database span processor's queue
(same retention, same storage) as rows, built here straight from the decoded
protobuf, and masked here with the pipeline's Masker, by the same rules the writer
applies to SDK spans (``dashboard.traces.convert.span_rows``): keys of span, event and
resource attributes and of maps inside them; strings at any depth; the status message.
A string is masked whole, then truncated, so a secret longer than the limit cannot
leave its prefix behind; a key's sensitivity is judged on the whole key.
Building rows here, in the request, rather than ReadableSpans the writer
converts again, halves the CPU per span (bench/bench_ingest.py);
tests/dashboard/ingest/test_rows.py checks the rows equal the old path's.

Limits applied here:

- spans beyond ``max_spans`` in one request, and spans with invalid ids or no start
  time, are *rejected*: not stored, counted in the answer's ``partial_success``;
- attributes beyond ``max_attributes`` (per span, event, resource, list and map), values
  beyond ``_MAX_NESTED_VALUES`` inside one attribute's lists and maps, and
  events beyond ``max_events`` are *dropped*, string values and keys longer than
  ``max_value_length`` are *truncated* (as the OpenTelemetry SDK's own limits do),
  and the span is kept.

Text is made storable everywhere: NUL characters are removed (PostgreSQL refuses
them), non-finite floats become strings (not valid JSON), and lists and maps nested
deeper than ``MAX_DEPTH`` become a placeholder.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from dashboard.traces.convert import MAX_LINKS, SpanRow
from dashboard.traces.masking import MASK, MAX_DEPTH, NESTED_TOO_DEEPLY, Masker

UNKNOWN_SERVICE = "unknown_service"
# Values (at any depth) inside one attribute's lists and maps: bounds the work a crafted
# attribute costs whatever max_attributes is (wide and deep: max_attributes ** MAX_DEPTH).
_MAX_NESTED_VALUES = 1024
_NAME_LENGTH = 255
# Span.SpanKind numbers → stored names; UNSPECIFIED (0) and unknown numbers: INTERNAL.
_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_REMOTE_KINDS = (2, 5)  # SERVER, CONSUMER: their parent is in another process
# SpanFlags in trace.proto: bit 8 says whether bit 9 (parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_STATUS_OK, _STATUS_ERROR = 1, 2


_TEXT_CACHE_SIZE = 20_000
_TEXT_CACHE_LENGTH = 256


class CachingMasker:
    """A Masker with a bounded memo of ``mask_text`` for short strings.

    Telemetry repeats the same values (methods, statuses, table names, hosts) in
    every span; the regular expressions run once per distinct value instead of per
    span. Lives as long as its settings (``masker_for``); the view's threads share
    it, and a dict's get and set are atomic, so a lost race only recomputes a value.
    """

    __slots__ = ("_memo", "masker")

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self._memo: dict[str, str] = {}

    def mask_text(self, text: str) -> str:
        masked = self._memo.get(text)
        if masked is None:
            masked = self.masker.mask_text(text)
            if len(text) <= _TEXT_CACHE_LENGTH:
                if len(self._memo) >= _TEXT_CACHE_SIZE:
                    self._memo = {}
                self._memo[text] = masked
        return masked


_maskers: dict[tuple[tuple[str, ...], tuple[str, ...]], CachingMasker] = {}


def masker_for(keys: tuple[str, ...], value_patterns: tuple[str, ...]) -> CachingMasker:
    """The (cached) masker for these settings: the span writer's rules, so ingested
    rows are masked exactly as the writer masks local spans."""
    found = _maskers.get((keys, value_patterns))
    if found is None:
        found = _maskers[(keys, value_patterns)] = CachingMasker(Masker(keys, value_patterns))
    return found


@dataclass(frozen=True, slots=True)
class Limits:
    max_spans: int
    max_attributes: int
    max_events: int
    max_value_length: int


@dataclass(slots=True)
class Converted:
    rows: list[SpanRow] = field(default_factory=list)
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count

    def error_message(self) -> str:
        return "; ".join(f"{count} {reason}" for reason, count in self.reasons.items())


def clean_text(value: str, limit: int) -> str:
    if "\0" in value:
        value = value.replace("\0", "")
    return value[:limit]


class AttributeValues:
    def __init__(self, limits: Limits, masker: CachingMasker) -> None:
        self._limits = limits
        self._masker = masker.masker
        self._mask_text = masker.mask_text
        self._budget = _MAX_NESTED_VALUES

    def text(self, text: str) -> str:
        # Mask the whole text, then truncate: cut first, a secret could lose the tail its
        # pattern needs (and its prefix would be stored).
        if "\0" in text:
            text = text.replace("\0", "")
        return self._mask_text(text)[: self._limits.max_value_length]

    def value(self, any_value: AnyValue, depth: int) -> Any:
        kind = any_value.WhichOneof("value")
        if kind == "string_value":
            return self.text(any_value.string_value)
        if kind == "int_value":
            return any_value.int_value
        if kind == "bool_value":
            return any_value.bool_value
        if kind == "double_value":
            number = any_value.double_value
            return number if math.isfinite(number) else str(number)
        if kind == "bytes_value":
            raw = any_value.bytes_value[: self._limits.max_value_length]
            return base64.b64encode(raw).decode()
        if depth >= MAX_DEPTH:
            return NESTED_TOO_DEEPLY
        if kind == "array_value":
            out: list[Any] = []
            for item in any_value.array_value.values[: self._limits.max_attributes]:
                if self._budget <= 0:
                    break
                self._budget -= 1
                out.append(self.value(item, depth + 1))
            return out
        if kind == "kvlist_value":
            return self._pairs(any_value.kvlist_value.values, depth + 1, nested=True)
        return None

    def _pairs(self, pairs: Iterable[KeyValue], depth: int, *, nested: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        limit, length = self._limits.max_attributes, self._limits.max_value_length
        sensitive = self._masker.is_sensitive
        for pair in pairs:
            if len(out) >= limit:
                break
            if nested:
                if self._budget <= 0:
                    break
                self._budget -= 1
            else:
                self._budget = _MAX_NESTED_VALUES
            key = pair.key
            out[clean_text(key, length)] = MASK if sensitive(key) else self.value(pair.value, depth)
        return out

    def attributes(self, pairs: Iterable[KeyValue]) -> dict[str, Any]:
        """Attributes masked as ``Masker.mask`` masks a span's, then truncated."""
        return self._pairs(pairs, 0, nested=False)


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


def _links(span: Span, values: AttributeValues) -> list[dict[str, Any]]:
    """Links with valid ids, at most ``MAX_LINKS`` (the span writer keeps no more)."""
    return [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": values.attributes(link.attributes),
        }
        for link in span.links[:MAX_LINKS]
        if len(link.trace_id) == 16
        and any(link.trace_id)
        and len(link.span_id) == 8
        and any(link.span_id)
    ]


def _row(
    span: Span,
    resource: dict[str, Any],
    service: str,
    values: AttributeValues,
    limits: Limits,
) -> SpanRow:
    kind = span.kind
    parent_id = span.parent_span_id
    if any(parent_id):
        parent: str | None = parent_id.hex()
        if span.flags & _HAS_IS_REMOTE:
            remote = bool(span.flags & _IS_REMOTE)
        else:
            remote = kind in _REMOTE_KINDS
        root_class = 1 if remote else 2
    else:
        parent, root_class = None, 0
    status = span.status
    code = status.code
    if code == _STATUS_ERROR:
        status_name, status_message = "ERROR", values.text(status.message)
    else:
        status_name, status_message = "OK" if code == _STATUS_OK else "UNSET", ""
    start = span.start_time_unix_nano
    start_us = start // 1000
    events = span.events
    return SpanRow(
        span.trace_id.hex(),
        span.span_id.hex(),
        parent,
        clean_text(span.name, _NAME_LENGTH),
        service,
        _KINDS.get(kind, "INTERNAL"),
        start_us,
        max((span.end_time_unix_nano or start) // 1000, start_us),
        status_name,
        status_message,
        values.attributes(span.attributes),
        [
            {
                "name": clean_text(event.name, _NAME_LENGTH),
                "time_us": (event.time_unix_nano or start) // 1000,
                "attributes": values.attributes(event.attributes),
            }
            for event in events[: limits.max_events]
        ]
        if events
        else [],
        resource,
        _links(span, values) if span.links else [],
        root_class,
    )


def convert(
    resource_spans: Iterable[ResourceSpans], *, limits: Limits, masker: Masker | CachingMasker
) -> Converted:
    """Masked rows for every valid span (up to ``limits.max_spans``), and what was rejected."""
    result = Converted()
    rows = result.rows
    if isinstance(masker, Masker):
        masker = CachingMasker(masker)
    values = AttributeValues(limits, masker)
    for group in resource_spans:
        resource = values.attributes(group.resource.attributes)
        service = resource.get("service.name")
        if not isinstance(service, str) or not service:
            # Masked like any value: "unknown_service" has nothing to mask.
            resource["service.name"] = service = UNKNOWN_SERVICE
        service = service[:_NAME_LENGTH]
        for scope in group.scope_spans:
            for span in scope.spans:
                if len(rows) >= limits.max_spans:
                    result.reject(f"spans beyond the limit of {limits.max_spans} per request")
                    continue
                reason = _invalid(span)
                if reason is not None:
                    result.reject(reason)
                    continue
                rows.append(_row(span, resource, service, values, limits))
    return result
