"""The span-attribute index: one ``SpanAttribute`` row per trace and searchable attribute.

Attribute search (``key=value``) used to read every span's attributes (a JSON scan of
a million rows on SQLite). The span writer (``services.write_spans``, which both the
local span pipeline and OTLP ingest use) also writes, in the same transaction as the
spans, one row per trace, key and value: ``(key, value, trace_id, first_us, last_us)``,
the earliest and latest start of the trace's spans that carry it. The search asks
"which traces have key=value", so a row per span was redundant: rows are merged in the
batch and upserted (``ON CONFLICT (key, value, trace_id)``), and the table is its
primary key alone (SQLite ``WITHOUT ROWID``; PostgreSQL's primary key includes the two
starts), one b-tree to write.

Exactness: ``first_us`` and ``last_us`` are starts of stored spans, kept so by retention
(``services.cleanup_spans`` recomputes the rows of the traces whose spans it deletes
from their remaining spans, and deletes a row when none carries it). A time-bounded
search keeps a trace when a span at either end lies within the bounds and checks the
trace's spans only when its attribute spans straddle the whole window
(``span_filters.indexed_attribute``).

What is indexed, so that the index answers exactly what the JSON search answered:

- scalar values only: strings, bools, ints and floats (arrays, maps and nulls never
  matched a typed ``key=value`` search);
- the stored value, so a masked attribute is indexed as ``***``;
- a key of at most ``MAX_KEY`` characters and a string of at most ``MAX_VALUE``;
  a longer key or value is not indexed, and a search for one falls back to the JSON
  scan (still exact, only slower);
- at most ``MAX_PER_SPAN`` attributes per span, in key order when a span has more (ingest
  keeps at most ``INGEST_MAX_ATTRIBUTES``, 128 by default, and the OpenTelemetry SDK 128
  too);
- a number spelled in at most ``MAX_VALUE`` characters.

A value is stored as one typed text: ``s`` + the string, ``b`` + ``true``/``false``,
``n`` + the number in one canonical spelling (an integral float as its integer, so
``200``, ``200.0`` and ``2e2`` meet, as JSON numbers compare on both databases).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from decimal import Decimal
from math import isfinite
from typing import Any

MAX_KEY = 128
MAX_VALUE = 256
MAX_PER_SPAN = 1024  # INGEST_MAX_ATTRIBUTES may not exceed it (dashboard.ingest.conf)
_EXACT = 2.0**53  # integral floats below it spell the same as their int


def encode(value: Any) -> str | None:
    """The index text of a stored attribute value; None if it is not indexed."""
    kind = type(value)
    if kind is str:
        return "s" + value if len(value) <= MAX_VALUE else None
    if kind is bool:
        return "btrue" if value else "bfalse"
    if kind is int:
        text = "n" + str(value)
    elif kind is float:
        if not isfinite(value):
            return None  # stored as JSON null
        if not value.is_integer():
            text = "n" + repr(value)
        elif -_EXACT < value < _EXACT:
            text = "n" + str(int(value))
        else:
            # Spelled from its shortest repr, as JSON stores it: PostgreSQL's jsonb gives
            # 2.0**60 back as the integer 1152921504606847000, not ...846976, and the rows
            # rebuilt from stored spans (retention) must meet the rows written.
            text = "n" + str(int(Decimal(repr(value))))
    else:
        return None
    return text if len(text) <= MAX_VALUE + 1 else None  # 1e300: not indexed (JSON scan)


def typed_candidates(value: str) -> list[Any]:
    """The text as typed, plus the JSON number or bool it spells (canonically).

    "200" also finds the int 200 and "true" the bool; "007" finds only the string.
    """
    candidates: list[Any] = [value]
    if value in ("true", "false"):
        candidates.append(value == "true")
        return candidates
    try:
        number = int(value)
    except ValueError:
        pass
    else:
        if str(number) == value:
            candidates.append(number)
        return candidates
    if "." in value or "e" in value.lower():
        with suppress(ValueError):
            candidates.append(float(value))
    return candidates


def searchable(key: str, value: str) -> list[str] | None:
    """The index texts a search for ``key=value`` looks up; None when the index
    cannot answer it (key or value beyond what is indexed)."""
    if len(key) > MAX_KEY or len(value) > MAX_VALUE:
        return None
    texts = [encode(candidate) for candidate in typed_candidates(value)]
    return list(dict.fromkeys(text for text in texts if text is not None))


def attribute_rows(
    spans: Iterable[tuple[str, int, dict[str, Any]]],
) -> list[tuple[str, str, str, int, int]]:
    """``(key, value text, trace_id, first_us, last_us)``, one per trace and indexed
    attribute of ``(trace_id, start_us, attributes)``, sorted (the primary key's order)."""
    merged: dict[tuple[str, str, str], list[int]] = {}
    get = merged.get
    for trace_id, start_us, attributes in spans:
        count = 0
        # Beyond MAX_PER_SPAN, which attributes are indexed must not depend on the order
        # the database gives keys back in (jsonb sorts them): take them in key order.
        items = (
            attributes.items() if len(attributes) <= MAX_PER_SPAN else sorted(attributes.items())
        )
        for key, value in items:
            kind = type(value)
            if kind is str:
                if len(value) > MAX_VALUE:
                    continue
                text = "s" + value
            else:
                text = encode(value)
                if text is None:
                    continue
            if len(key) > MAX_KEY:
                continue
            row = (key, text, trace_id)
            span = get(row)
            if span is None:
                merged[row] = [start_us, start_us]
            elif start_us < span[0]:
                span[0] = start_us
            elif start_us > span[1]:
                span[1] = start_us
            count += 1
            if count == MAX_PER_SPAN:
                break
    return sorted((*row, first, last) for row, (first, last) in merged.items())


COLUMNS: Sequence[str] = ("key", "value", "trace_id", "first_us", "last_us")
