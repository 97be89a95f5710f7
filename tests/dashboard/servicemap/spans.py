"""Crafted span rows for the service map tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.traces.models import SpanKind, SpanRecord, SpanStatus

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def span_id() -> str:
    return f"{next(_ids):016x}"


def make(
    *,
    service: str,
    trace: str = "a" * 32,
    span: str | None = None,
    parent: str | None = None,
    start: datetime = T0,
    duration_us: int = 1000,
    error: bool = False,
    kind: str = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
    save: bool = True,
) -> SpanRecord:
    record = SpanRecord(
        trace_id=trace,
        span_id=span or span_id(),
        parent_span_id=parent,
        name=f"{service} op",
        service=service,
        kind=kind,
        start=start,
        end=start + timedelta(microseconds=duration_us),
        duration_us=duration_us,
        status=SpanStatus.ERROR if error else SpanStatus.UNSET,
        attributes=attributes or {},
    )
    if save:
        record.save()
    return record
