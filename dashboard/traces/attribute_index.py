"""The span-attribute index: one ``SpanAttribute`` row per searchable attribute.

Attribute search (``key=value``) used to read every span's attributes (a JSON scan of
a million rows on SQLite). The span writer (``services.write_spans``, which both the
local span pipeline and OTLP ingest use) now also writes, in the same transaction as
the spans, one row per scalar attribute: ``(id, trace_id, key, value, start_us)``,
indexed on ``(key, value, trace_id, start_us)``. The row's primary key is the span's
shifted left by ``SHIFT`` bits plus the attribute's position, so the rows of a span
are one primary-key range: no second index to write, and retention deletes them
with their spans by ranges (``services.cleanup_spans``).

What is indexed, so that the index answers exactly what the JSON search answered:

- scalar values only: strings, bools, ints and floats (arrays, maps and nulls never
  matched a typed ``key=value`` search);
- the stored value, so a masked attribute is indexed as ``***``;
- a key of at most ``MAX_KEY`` characters and a string of at most ``MAX_VALUE``;
  a longer key or value is not indexed, and a search for one falls back to the JSON
  scan (still exact, only slower);
- at most ``MAX_PER_SPAN`` attributes per span (ingest keeps at most
  ``INGEST_MAX_ATTRIBUTES``, 128 by default, and the OpenTelemetry SDK 128 too).

A value is stored as one typed text: ``s`` + the string, ``b`` + ``true``/``false``,
``n`` + the number in one canonical spelling (an integral float as its integer, so
``200``, ``200.0`` and ``2e2`` meet, as JSON numbers compare on both databases).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from math import isfinite
from typing import Any

MAX_KEY = 128
MAX_VALUE = 256
MAX_PER_SPAN = 1024  # INGEST_MAX_ATTRIBUTES may not exceed it (dashboard.ingest.conf)
SHIFT = 10  # 2**SHIFT > MAX_PER_SPAN: a span's rows are ids [pk << SHIFT, (pk + 1) << SHIFT)


def encode(value: Any) -> str | None:
    """The index text of a stored attribute value; None if it is not indexed."""
    kind = type(value)
    if kind is str:
        return "s" + value if len(value) <= MAX_VALUE else None
    if kind is bool:
        return "btrue" if value else "bfalse"
    if kind is int:
        return "n" + str(value)
    if kind is float:
        if not isfinite(value):
            return None  # stored as JSON null
        return "n" + (str(int(value)) if value.is_integer() else repr(value))
    return None


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
    spans: Iterable[tuple[int, str, int, dict[str, Any]]],
) -> list[tuple[int, str, str, str, int]]:
    """``(id, trace_id, key, value text, start_us)`` for each indexed attribute of
    ``(span pk, trace_id, start_us, attributes)``, in the model's column order."""
    rows: list[tuple[int, str, str, str, int]] = []
    append = rows.append
    for pk, trace_id, start_us, attributes in spans:
        first = pk << SHIFT
        position = first
        last = first + MAX_PER_SPAN
        for key, value in attributes.items():
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
            append((position, trace_id, key, text, start_us))
            position += 1
            if position == last:
                break
    return rows


def span_ranges(pks: Iterable[int]) -> list[tuple[int, int]]:
    """The id ranges ``[low, high)`` holding the rows of the spans ``pks``, one per run
    of consecutive pks."""
    ranges: list[tuple[int, int]] = []
    for pk in sorted(pks):
        low, high = pk << SHIFT, (pk + 1) << SHIFT
        if ranges and ranges[-1][1] == low:
            ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return ranges


COLUMNS: Sequence[str] = ("id", "trace_id", "key", "value", "start_us")
