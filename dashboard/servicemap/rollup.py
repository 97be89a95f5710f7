"""The rollup: spans → per-minute edge aggregates, incrementally from a watermark.

Concurrency model
-----------------
``rollup()`` may be called from any thread: the page and the API call it before they
answer (bounded by ``max_spans``, not blocking), and a periodic task calls it to keep
up. A process-wide lock lets one run at a time in this process. Across processes, each
batch commits its aggregates together with a *conditional* move of the watermark
(``UPDATE ... WHERE last_span_id = <value read>``): a run that lost the race updates no
row, rolls its batch back and stops, so a batch is never counted twice.

Counting rule (why late spans are exact)
----------------------------------------
An edge call is a (parent, child) pair in one trace with different services (the child
is the call: its start minute, status and duration), or a CLIENT span naming a peer
(``peer.service`` / ``server.address``) that differs from its own service (the span is
the call; its cross-service children are then not counted again). A pair is counted
exactly once: by the run that processes the *later* (higher primary key) of its two
spans, looking back at every stored span with a lower key. So whichever arrives first,
and however the spans are split between runs, the sum equals a full recompute (the
tests check this with Hypothesis). That needs every span at or below the watermark to
be stored for good (or never), which is what the *horizon* below gives.

Late commits
------------
On PostgreSQL a run folds only ids up to a horizon below which nothing can still
commit: see :mod:`dashboard.servicemap.horizon`.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.fields.json import KT

from dashboard.traces.models import SpanKind, SpanRecord, SpanStatus

from . import histogram
from .horizon import horizon
from .models import EdgeMinute, RollupWatermark

#: Attributes naming the breaker that guards a call, on the caller's span (first wins).
#: The workflow engine sets ``breaker`` on its CLIENT spans.
BREAKER_KEYS = ("resilience.breaker", "breaker")
#: Attributes naming the called service on a CLIENT span (first wins).
PEER_KEYS = ("peer.service", "server.address")
BATCH = 5000
#: Rows older than this many minutes are pruned (the longest range is 24 h).
KEEP_MINUTES = 25 * 60

_lock = threading.Lock()
_FIELDS = ("id", "trace_id", "span_id", "parent_span_id", "service", "kind", "start",
           "duration_us", "status")  # fmt: skip
_ANNOTATIONS = {
    **{f"b{i}": KT(f"attributes__{key}") for i, key in enumerate(BREAKER_KEYS)},
    **{f"p{i}": KT(f"attributes__{key}") for i, key in enumerate(PEER_KEYS)},
}


@dataclass(frozen=True, slots=True)
class RollupResult:
    processed: int  # spans read past the watermark
    calls: int  # edge calls added
    watermark: int
    caught_up: bool  # False: stopped at max_spans, or the lock/race was lost
    skipped: bool = False  # another run held the lock or moved the watermark


@dataclass(slots=True)
class _Span:
    id: int
    trace_id: str
    span_id: str
    parent: str | None
    service: str
    minute: int
    duration_us: int
    error: bool
    breaker: str
    peer: str  # the called service when this span declares one (CLIENT with a peer)
    peer_key: str  # the attribute that named it ("peer.service", ...), else ""


def _first(values: Sequence[Any], keys: Sequence[str]) -> tuple[str, str]:
    """(value, key) of the first of ``keys`` the span has, else ("", "")."""
    for value, key in zip(values, keys, strict=True):
        if value not in (None, ""):
            return str(value)[:255], key
    return "", ""


_minutes: dict[str, int] = {}


def _minute(start: Any) -> int:
    """Minutes since the epoch of a raw ``start`` column value (text on SQLite)."""
    if isinstance(start, datetime):
        return int(start.timestamp()) // 60
    text = str(start)[:16]  # "YYYY-MM-DD HH:MM", UTC as Django stores it
    minute = _minutes.get(text)
    if minute is None:
        if len(_minutes) > 100_000:
            _minutes.clear()
        parsed = datetime.fromisoformat(text).replace(tzinfo=UTC)
        minute = _minutes[text] = int(parsed.timestamp()) // 60
    return minute


def _span(row: Sequence[Any]) -> _Span:
    id_, trace_id, span_id, parent, service, kind, start, duration_us, status = row[:9]
    breaker = _first(row[9 : 9 + len(BREAKER_KEYS)], BREAKER_KEYS)[0]
    peer, peer_key = ("", "")
    if kind == SpanKind.CLIENT:
        peer, peer_key = _first(row[9 + len(BREAKER_KEYS) :], PEER_KEYS)
        if peer == service:
            peer, peer_key = "", ""
    return _Span(
        id=id_,
        trace_id=trace_id,
        span_id=span_id,
        parent=parent,
        service=service,
        minute=_minute(start),
        duration_us=duration_us,
        error=status == SpanStatus.ERROR,
        breaker=breaker,
        peer=peer,
        peer_key=peer_key,
    )


class _Deltas:
    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, str, str, str], list[Any]] = {}
        self.calls = 0

    def call(self, caller: str, callee: str, breaker: str, peer_key: str, span: _Span) -> None:
        key = (span.minute, caller, callee, breaker, peer_key)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0, 0, 0, {}]
        row[0] += 1
        row[1] += span.error
        row[2] += span.duration_us
        histogram.add(row[3], span.duration_us)
        self.calls += 1


def count_calls(new: Sequence[_Span], older: Iterable[_Span], deltas: _Deltas) -> None:
    """Add the calls that ``new`` completes, looking back at ``older`` and ``new`` itself."""
    by_span: dict[tuple[str, str], list[_Span]] = defaultdict(list)
    by_parent: dict[tuple[str, str], list[_Span]] = defaultdict(list)
    for span in (*older, *new):
        by_span[(span.trace_id, span.span_id)].append(span)
        if span.parent:
            by_parent[(span.trace_id, span.parent)].append(span)

    def pair(parent: _Span, child: _Span) -> None:
        if parent.service != child.service and not parent.peer:
            deltas.call(parent.service, child.service, parent.breaker, "", child)

    for span in new:
        if span.peer:
            deltas.call(span.service, span.peer, span.breaker, span.peer_key, span)
        if span.parent:
            for parent in by_span.get((span.trace_id, span.parent), ()):
                if parent.id < span.id:
                    pair(parent, span)
        for child in by_parent.get((span.trace_id, span.span_id), ()):
            if child.id < span.id:
                pair(span, child)


def _rows(spans: QuerySet[SpanRecord]) -> list[_Span]:
    # Raw rows: Django's per-row converters (datetimes, JSON) cost more than the rollup.
    query = spans.annotate(**_ANNOTATIONS).values_list(*_FIELDS, *_ANNOTATIONS)
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [_span(row) for row in cursor.fetchall()]


class _LostRace(Exception):
    pass


def _save(watermark: int, new_watermark: int, deltas: _Deltas) -> None:
    with transaction.atomic():
        # First statement of the transaction: takes the write lock (SQLite) or the row
        # lock (PostgreSQL) before anything else is written.
        moved = RollupWatermark.objects.filter(pk=1, last_span_id=watermark).update(
            last_span_id=new_watermark
        )
        if not moved:
            raise _LostRace
        if not deltas.rows:
            return
        minutes = {key[0] for key in deltas.rows}
        existing = {
            (row.minute, row.caller, row.callee, row.breaker, row.peer_key): row
            for row in EdgeMinute.objects.filter(minute__in=minutes)
        }
        changed: list[tuple[Any, ...]] = []
        created = []
        for key, (calls, errors, total_us, hist) in deltas.rows.items():
            row = existing.get(key)
            if row is None:
                minute, caller, callee, breaker, peer_key = key
                created.append(
                    EdgeMinute(
                        minute=minute,
                        caller=caller,
                        callee=callee,
                        breaker=breaker,
                        peer_key=peer_key,
                        calls=calls,
                        errors=errors,
                        duration_sum_us=total_us,
                        histogram=hist,
                    )  # fmt: skip
                )
                continue
            merged = dict(row.histogram)
            for index, count in hist.items():
                merged[index] = merged.get(index, 0) + count
            changed.append((calls, errors, total_us, orjson.dumps(merged).decode(), row.pk))
        EdgeMinute.objects.bulk_create(created, batch_size=500)
        if changed:
            # Django's bulk_update builds a CASE per column: 10x slower than this.
            table = connection.ops.quote_name(EdgeMinute._meta.db_table)
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET calls = calls + %s, errors = errors + %s, "  # noqa: S608
                    "duration_sum_us = duration_sum_us + %s, histogram = %s WHERE id = %s",
                    changed,
                )


def _chunks(values: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


_WATERMARK = -7_919_000_001  # placeholders, swapped for real values at execution


@functools.lru_cache(maxsize=8)
def _older_sql(size: int) -> tuple[str, tuple[Any, ...]]:
    """The SQL of "spans of these ``size`` traces at or below the watermark", compiled once:
    Django's per-value processing of a 500-item ``IN`` costs more than running it."""
    query = (
        SpanRecord.objects.filter(id__lte=_WATERMARK)
        .filter(trace_id__in=[f"\x00{i}" for i in range(size)])
        .annotate(**_ANNOTATIONS)
        .values_list(*_FIELDS, *_ANNOTATIONS)
    )
    sql, params = query.query.sql_with_params()
    return sql, tuple(params)


def _older(new: Sequence[_Span], watermark: int) -> list[_Span]:
    """Stored spans at or below the watermark that may pair with ``new``."""
    found: list[_Span] = []
    traces = sorted({span.trace_id for span in new})
    parents = {span.parent for span in new if span.parent}
    ids = {span.span_id for span in new}
    for chunk in _chunks(traces):
        sql, template = _older_sql(len(chunk))
        values: dict[Any, Any] = {f"\x00{i}": trace for i, trace in enumerate(chunk)}
        values[_WATERMARK] = watermark
        params = [values.get(p, p) if isinstance(p, str | int) else p for p in template]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for span in map(_span, rows):
            if span.span_id in parents or (span.parent is not None and span.parent in ids):
                found.append(span)
    return found


def _process_batch(watermark: int, batch: int, limit: int | None) -> tuple[int, int, int]:
    """One batch after ``watermark`` (up to ``limit``): (spans read, calls added, new watermark)."""
    spans = SpanRecord.objects.filter(id__gt=watermark)
    if limit is not None:
        spans = spans.filter(id__lte=limit)
    new = _rows(spans.order_by("id")[:batch])
    if not new:
        return 0, 0, watermark
    deltas = _Deltas()
    count_calls(new, _older(new, watermark), deltas)
    top = new[-1].id
    _save(watermark, top, deltas)
    return len(new), deltas.calls, top


def _watermark() -> int:
    mark, _ = RollupWatermark.objects.get_or_create(pk=1)
    return mark.last_span_id


def rollup(
    *,
    max_spans: int | None = None,
    batch_size: int = BATCH,
    blocking: bool = True,
    now: datetime | None = None,
) -> RollupResult:
    """Fold every span stored since the last run into the per-minute edge rows.

    Args:
        max_spans: stop after about this many spans (None: until caught up). The page
            and API pass a bound so that a first visit over a big backlog stays quick.
        batch_size: spans per transaction.
        blocking: wait for a run already going in this process (False: return skipped).
        now: prune rows older than ``KEEP_MINUTES`` before this time (None: no pruning).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if not _lock.acquire(blocking=blocking):
        return RollupResult(0, 0, _watermark(), caught_up=False, skipped=True)
    try:
        watermark = _watermark()
        limit = horizon()
        processed = calls = 0
        while max_spans is None or processed < max_spans:
            size = batch_size if max_spans is None else min(batch_size, max_spans - processed)
            try:
                read, added, watermark = _process_batch(watermark, size, limit)
            except _LostRace:
                return RollupResult(processed, calls, _watermark(), caught_up=False, skipped=True)
            processed += read
            calls += added
            if read < size:
                break
        else:
            rest = SpanRecord.objects.filter(id__gt=watermark)
            if limit is not None:
                rest = rest.filter(id__lte=limit)
            caught_up = not rest.exists()
            return RollupResult(processed, calls, watermark, caught_up=caught_up)
        if now is not None:
            cutoff = int(now.timestamp()) // 60 - KEEP_MINUTES
            EdgeMinute.objects.filter(minute__lt=cutoff).delete()
        return RollupResult(processed, calls, watermark, caught_up=True)
    finally:
        _lock.release()


def rebuild() -> RollupResult:
    """Forget the rollup and recompute it from every stored span."""
    with _lock, transaction.atomic():
        EdgeMinute.objects.all().delete()
        RollupWatermark.objects.update_or_create(pk=1, defaults={"last_span_id": 0})
    return rollup()
