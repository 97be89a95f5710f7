"""OpenTelemetry ReadableSpan → SpanRecord rows and per-trace summary deltas."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, StatusCode

from .masking import Masker

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# root_rank = class * _RANK_STEP + start_us: parentless spans beat remote-parent ones,
# which beat local children; among equals the earliest start wins.
_RANK_STEP = 10**17
MAX_LINKS = 32  # per span, as stored; more are dropped (the SDK's own default cap is 128)


def to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def to_us(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(slots=True)
class TraceDelta:
    """What one batch adds to a trace's TraceSummary row."""

    trace_id: str
    root_rank: int
    root_name: str
    root_service: str
    start_us: int
    end_us: int
    span_count: int
    error_count: int

    def as_params(self) -> tuple[Any, ...]:
        return (
            self.trace_id,
            self.root_name,
            self.root_service,
            self.root_rank,
            self.start_us,
            self.end_us,
            self.end_us - self.start_us,
            self.span_count,
            self.error_count,
        )


class SpanRow(NamedTuple):
    """One span, ready to adapt for any database backend (times in µs since the epoch).

    Masked already. ``root_class`` ranks it as its trace's root: 0 no parent, 1 a
    remote parent, 2 a local parent. OTLP ingest builds these straight from protobuf
    (``dashboard.ingest.spans``) and queues them next to local SDK spans.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start_us: int
    end_us: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    links: list[dict[str, Any]] = []  # noqa: RUF012 (a NamedTuple default, never mutated)
    root_class: int = 2


def _links(links: Sequence[Link], mask: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": f"{link.context.trace_id:032x}",
            "span_id": f"{link.context.span_id:016x}",
            "attributes": mask(link.attributes),
        }
        for link in links[:MAX_LINKS]
    ]


def span_rows(
    spans: Iterable[ReadableSpan | SpanRow], masker: Masker
) -> tuple[list[SpanRow], list[TraceDelta]]:
    """Masked rows for ``spans`` and one TraceDelta per trace among them.

    SpanRows among ``spans`` (masked already) are taken as they are. Spans sharing a
    Resource share one (masked) resource dict, so a writer can encode it once per batch.
    """
    rows: list[SpanRow] = []
    resources: dict[int, tuple[object, dict[str, Any], str]] = {}
    mask = masker.mask
    for span in spans:
        if isinstance(span, SpanRow):
            rows.append(span)
            continue
        context = span.context
        if context is None:
            continue
        resource = span.resource
        cached = resources.get(id(resource))
        if cached is None:
            attrs = mask(resource.attributes)
            cached = (resource, attrs, str(attrs.get("service.name", ""))[:255])
            resources[id(resource)] = cached
        trace_id = f"{context.trace_id:032x}"
        parent = span.parent
        start_us = (span.start_time or 0) // 1000
        end_us = max((span.end_time or 0) // 1000, start_us)
        status = span.status
        code = status.status_code
        name = span.name[:255]
        service = cached[2]
        events = span.events  # each read copies the SDK's list: once
        links = span.links
        rows.append(
            SpanRow(
                trace_id,
                f"{context.span_id:016x}",
                f"{parent.span_id:016x}" if parent is not None else None,
                name,
                service,
                span.kind.name,
                start_us,
                end_us,
                code.name,
                masker.mask_text(status.description) if status.description else "",
                mask(span.attributes),
                [
                    {
                        "name": event.name,
                        "time_us": event.timestamp // 1000,
                        "attributes": mask(event.attributes),
                    }
                    for event in events
                ]
                if events
                else [],
                cached[1],
                _links(links, mask) if links else [],
                0 if parent is None else 1 if parent.is_remote else 2,
            )
        )
    return rows, trace_deltas(rows)


def trace_deltas(rows: Iterable[SpanRow]) -> list[TraceDelta]:
    """One TraceDelta per trace among ``rows``."""
    deltas: dict[str, TraceDelta] = {}
    error = StatusCode.ERROR.name
    for row in rows:
        trace_id, start_us, end_us = row.trace_id, row.start_us, row.end_us
        is_error = row.status == error
        rank = row.root_class * _RANK_STEP + start_us
        delta = deltas.get(trace_id)
        if delta is None:
            deltas[trace_id] = TraceDelta(
                trace_id, rank, row.name, row.service, start_us, end_us, 1, int(is_error)
            )
            continue
        if rank < delta.root_rank:
            delta.root_rank, delta.root_name, delta.root_service = rank, row.name, row.service
        if start_us < delta.start_us:
            delta.start_us = start_us
        if end_us > delta.end_us:
            delta.end_us = end_us
        delta.span_count += 1
        delta.error_count += is_error
    return list(deltas.values())
