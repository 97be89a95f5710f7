"""One trace as a waterfall: depth-first rows with bar geometry, self time, per-name stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dashboard.durations import format_us

from .convert import to_datetime, to_us
from .critical_path import PathSpan, critical_path
from .models import SpanRecord, SpanStatus

MAX_TRACE_SPANS = 10_000

_WATERFALL_FIELDS = (
    "span_id",
    "parent_span_id",
    "name",
    "service",
    "kind",
    "start",
    "duration_us",
    "status",
    "status_message",
)


@dataclass(slots=True)
class WaterfallRow:
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start: datetime
    start_us: int
    duration_us: int
    status: str
    status_message: str
    depth: int = 0
    offset: str = "0"
    width: str = "0"
    label_at: str = "left:0%"  # the duration label: after the bar, or before it near the end
    children: int = 0
    closers: int = 0
    self_us: int = 0
    # (left %, width %) of each critical-path segment of this span, on the same scale
    critical: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return self.status == SpanStatus.ERROR

    @property
    def duration(self) -> str:
        return format_us(self.duration_us)

    @property
    def close_range(self) -> range:
        return range(self.closers)


@dataclass(slots=True)
class NameStats:
    service: str
    name: str
    count: int = 0
    total_us: int = 0
    self_us: int = 0
    max_us: int = 0
    errors: int = 0

    @property
    def total(self) -> str:
        return format_us(self.total_us)

    @property
    def self_time(self) -> str:
        return format_us(self.self_us)

    @property
    def average(self) -> str:
        return format_us(self.total_us / self.count if self.count else 0)

    @property
    def maximum(self) -> str:
        return format_us(self.max_us)


@dataclass(slots=True)
class TraceDetail:
    trace_id: str
    rows: list[WaterfallRow]
    stats: list[NameStats]
    start: datetime
    duration_us: int
    error_count: int
    services: list[str]
    max_depth: int
    truncated: bool = False
    root: WaterfallRow | None = field(default=None)

    @property
    def duration(self) -> str:
        return format_us(self.duration_us)

    @property
    def span_count(self) -> int:
        return len(self.rows)


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, current_start, current_end = 0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        elif end > current_end:
            current_end = end
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def trace_detail(*, trace_id: str) -> TraceDetail | None:
    """The waterfall (depth-first, children by start time) and per-name statistics."""
    found = list(
        SpanRecord.objects.filter(trace_id=trace_id)
        .order_by("start", "id")
        .values_list(*_WATERFALL_FIELDS)[: MAX_TRACE_SPANS + 1]
    )
    if not found:
        return None
    return build_detail(
        trace_id=trace_id,
        found=found[:MAX_TRACE_SPANS],
        truncated=len(found) > MAX_TRACE_SPANS,
    )


def build_detail(
    *, trace_id: str, found: Sequence[tuple[Any, ...]], truncated: bool = False
) -> TraceDetail:
    """The waterfall of ``found`` rows (the ``_WATERFALL_FIELDS`` of each span, by start),
    stored or not: an uploaded file is drawn by the same code."""
    spans: dict[str, WaterfallRow] = {}
    ends: dict[str, int] = {}
    for span_id, parent, name, service, kind, start, duration, status, message in found:
        if span_id in spans:
            continue  # the same span exported twice
        start_us = to_us(start)
        spans[span_id] = WaterfallRow(
            span_id, parent, name, service, kind, start, start_us, duration, status, message
        )
        ends[span_id] = start_us + duration
    children: dict[str, list[WaterfallRow]] = {}
    roots: list[WaterfallRow] = []
    for row in spans.values():
        if row.parent_span_id is not None and row.parent_span_id in spans:
            children.setdefault(row.parent_span_id, []).append(row)
        else:
            roots.append(row)
    t0 = min(row.start_us for row in spans.values())
    t1 = max(ends.values())
    total = max(t1 - t0, 1)

    rows: list[WaterfallRow] = []
    visited: set[str] = set()
    # None on the stack closes the <details> of the span pushed just before its children.
    stack: list[tuple[WaterfallRow, int] | None] = [(root, 0) for root in reversed(roots)]
    while True:
        if not stack:
            # Spans caught in a parent cycle are unreachable from any root: show them flat.
            left = [row for row in spans.values() if row.span_id not in visited]
            if not left:
                break
            stack = [(left[0], 0)]
        item = stack.pop()
        if item is None:
            rows[-1].closers += 1
            continue
        row, depth = item
        if row.span_id in visited:
            continue
        visited.add(row.span_id)
        row.depth = depth
        offset, width = (row.start_us - t0) * 100 / total, row.duration_us * 100 / total
        row.offset, row.width = f"{offset:.3f}", f"{width:.3f}"
        end = offset + width
        row.label_at = f"left:{end:.3f}%" if end < 85 else f"right:{100 - offset:.3f}%"
        rows.append(row)
        kids = [kid for kid in children.get(row.span_id, ()) if kid.span_id not in visited]
        row.children = len(kids)
        start, end = row.start_us, ends[row.span_id]
        covered = _union_length(
            [(max(k.start_us, start), min(ends[k.span_id], end)) for k in kids if k.start_us < end]
        )
        row.self_us = max(row.duration_us - covered, 0)
        if kids:
            stack.append(None)
            stack.extend((kid, depth + 1) for kid in reversed(kids))

    path = critical_path(
        PathSpan(row.span_id, row.parent_span_id, row.start_us, ends[row.span_id]) for row in rows
    )
    for segment in path:
        row = spans[segment.span_id]
        at = (segment.start_us - t0) * 100 / total
        length = (segment.end_us - segment.start_us) * 100 / total
        row.critical.append((f"{at:.3f}", f"{length:.3f}"))

    stats: dict[tuple[str, str], NameStats] = {}
    for row in rows:
        entry = stats.get((row.service, row.name))
        if entry is None:
            entry = stats[(row.service, row.name)] = NameStats(row.service, row.name)
        entry.count += 1
        entry.total_us += row.duration_us
        entry.self_us += row.self_us
        entry.max_us = max(entry.max_us, row.duration_us)
        entry.errors += row.is_error
    return TraceDetail(
        trace_id=trace_id,
        rows=rows,
        stats=sorted(stats.values(), key=lambda s: (-s.self_us, s.name)),
        start=to_datetime(t0),
        duration_us=t1 - t0,
        error_count=sum(row.is_error for row in rows),
        services=sorted({row.service for row in rows}),
        max_depth=max(row.depth for row in rows),
        truncated=truncated,
        root=rows[0] if rows else None,
    )
