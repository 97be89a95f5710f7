"""Span-level search filters: which spans (or attribute-index rows) a query's service,
caller, name, attribute and time bounds select. ``search`` turns them into traces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField, Value
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast, StrIndex

from .attribute_index import searchable, typed_candidates
from .convert import to_datetime
from .models import SpanAttribute, SpanRecord

if TYPE_CHECKING:
    from .search import TraceQuery

# A caller search visits at most this many candidate spans one by one (each a row read
# and a parent probe, a few µs); more, and it walks the summaries instead.
CALLER_CANDIDATES = 25_000


def _raw_token(value: str, candidates: Sequence[Any]) -> str | None:
    """Text every stored JSON encoding of a match contains, for a cheap pre-filter."""
    if not value.isascii() or not value.isprintable() or '"' in value or "\\" in value:
        return None
    if len(candidates) == 1:
        return orjson.dumps(value).decode()  # only a string can match: '"value"'
    number = candidates[1]
    if isinstance(number, int) and not isinstance(number, bool):
        return value  # 503 or "503"
    return None


def with_attribute(spans: QuerySet[SpanRecord], key: str, value: str) -> QuerySet[SpanRecord]:
    """Spans whose stored attributes have ``key`` equal to ``value`` (typed), read from
    the JSON column: the reference semantics the attribute index reproduces."""
    candidates = typed_candidates(value)
    if connection.vendor == "postgresql":
        # jsonb containment: exact, typed, and served by the GIN index span_attribute_search.
        either = Q()
        for candidate in candidates:
            either |= Q(attributes__contains={key: candidate})
        return spans.filter(either)
    token = _raw_token(value, candidates)
    if connection.vendor == "sqlite" and token is not None:
        # instr() on the stored text is ~2x cheaper than extracting the key from every
        # row; the exact, typed comparison below still decides.
        raw = StrIndex(Cast("attributes", output_field=TextField()), Value(token))
        spans = spans.alias(_raw=raw).filter(_raw__gt=0)
    either = Q()
    for candidate in candidates:
        either |= Q(_attr=candidate)
    return spans.alias(_attr=KeyTransform(key, "attributes")).filter(either)


def indexed_attribute(
    query: TraceQuery, since: int | None, until: int | None
) -> QuerySet[SpanAttribute] | None:
    """The attribute-index rows answering ``query`` when the attribute is its only
    span-level filter and the index holds what it asks for; None otherwise."""
    if query.attribute is None or query.service or query.name or query.caller:
        return None
    key, value = query.attribute
    texts = searchable(key, value)
    if texts is None:
        return None
    rows = SpanAttribute.objects.order_by().filter(key=key, value__in=texts)
    # A row's first_us and last_us are starts of stored spans carrying the attribute:
    # either one within the bounds is a match; only a trace whose attribute spans
    # straddle the whole window needs its spans read.
    if since is not None:
        rows = rows.filter(last_us__gte=since)
    if until is not None:
        rows = rows.filter(first_us__lte=until)
    if since is not None and until is not None:
        inside = SpanRecord.objects.filter(
            trace_id=OuterRef("trace_id"),
            start__gte=to_datetime(since),
            start__lte=to_datetime(until),
        )
        rows = rows.filter(
            Q(first_us__gte=since)
            | Q(last_us__lte=until)
            | Exists(with_attribute(inside, key, value))
        )
    return rows


def called_by(spans: QuerySet[SpanRecord], caller: str) -> QuerySet[SpanRecord]:
    """``spans`` not of service ``caller`` whose parent span, in the same trace, is.

    A correlated EXISTS: each span's parent is probed by ``(trace_id, service)`` on the
    trace_id index (a trace's few spans of that service), so the cost follows the spans
    visited, not how many spans the caller has.
    """
    parents = SpanRecord.objects.order_by().filter(
        trace_id=OuterRef("trace_id"), span_id=OuterRef("parent_span_id"), service=caller
    )
    return spans.exclude(service=caller).filter(Exists(parents))


def caller_trace_ids(query: TraceQuery, since: int | None, until: int | None) -> list[str] | None:
    """The trace ids of every span matching ``query`` (a ``caller`` search) when its
    candidate spans are few, None when there are too many to visit one by one.

    Candidates are counted from an index alone (capped): the spans of the requested
    name or service, each then probed for its parent; with neither, the caller's own
    spans, each probed for a child of another service. Beyond ``CALLER_CANDIDATES`` the
    search walks the summaries in sort order with the EXISTS probe instead, which stops
    after a page (and the count's window) of matches.
    """
    if query.service or query.name:
        candidates = SpanRecord.objects.order_by()
        if query.name:  # usually the fewer
            candidates = candidates.filter(name=query.name)
        else:
            candidates = candidates.filter(service=query.service)
        if since is not None:
            candidates = candidates.filter(start__gte=to_datetime(since))
        if until is not None:
            candidates = candidates.filter(start__lte=to_datetime(until))
        if candidates[: CALLER_CANDIDATES + 1].count() > CALLER_CANDIDATES:
            return None
        spans = spans_where(query, since, until, service=query.service)
        return list(spans.values_list("trace_id", flat=True))
    parents = SpanRecord.objects.order_by().filter(service=query.caller)
    if parents[: CALLER_CANDIDATES + 1].count() > CALLER_CANDIDATES:
        return None
    children = _span_filters(SpanRecord.objects.order_by(), query, since, until).filter(
        trace_id=OuterRef("trace_id"), parent_span_id=OuterRef("span_id")
    )
    children = children.exclude(service=query.caller)
    return list(parents.filter(Exists(children)).values_list("trace_id", flat=True))


def matching_spans(
    query: TraceQuery, since: int | None, until: int | None
) -> QuerySet[SpanRecord] | None:
    if not (query.service or query.name or query.attribute or query.caller):
        return None
    return spans_where(query, since, until, service=query.service)


def spans_where(
    query: TraceQuery, since: int | None, until: int | None, *, service: str
) -> QuerySet[SpanRecord]:
    spans = SpanRecord.objects.order_by()
    if service:
        spans = spans.filter(service=service)
    if query.caller:
        spans = called_by(spans, query.caller)
    return _span_filters(spans, query, since, until)


def _span_filters(
    spans: QuerySet[SpanRecord], query: TraceQuery, since: int | None, until: int | None
) -> QuerySet[SpanRecord]:
    """The name, time and attribute filters of a matching span."""
    if query.name:
        spans = spans.filter(name=query.name)
    if since is not None:
        spans = spans.filter(start__gte=to_datetime(since))
    if until is not None:
        spans = spans.filter(start__lte=to_datetime(until))
    if query.attribute is not None:
        spans = with_attribute(spans, *query.attribute)
    return spans
