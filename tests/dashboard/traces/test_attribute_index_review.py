"""Review findings on the per-trace attribute index (run on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.traces import attribute_index
from dashboard.traces.convert import SpanRow, to_us
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanAttribute, SpanRecord
from dashboard.traces.services import delete_spans, write_spans

pytestmark = pytest.mark.django_db

T0_US = 1_800_000_000 * 1_000_000
TRACE = f"{1:032x}"


def _row(span: int, start_us: int, attributes: dict[str, Any]) -> SpanRow:
    return SpanRow(
        TRACE, f"{span:016x}", None, "op", "svc", "INTERNAL",
        start_us, start_us + 10, "UNSET", "", attributes, [], {},
    )  # fmt: skip


def _stored_index() -> list[tuple[Any, ...]]:
    return sorted(SpanAttribute.objects.values_list(*attribute_index.COLUMNS))


def _expected_index() -> list[tuple[Any, ...]]:
    spans = SpanRecord.objects.values_list("trace_id", "start", "attributes")
    return attribute_index.attribute_rows(
        (trace, to_us(start), attrs) for trace, start, attrs in spans
    )


# 2**60 as a float: JSON "1.152921504606847e+18"; PostgreSQL's jsonb keeps the decimal
# 1152921504606847000 and gives it back as that int, so a stored span's attribute no
# longer encodes to the text the writer indexed ("n1152921504606846976").
BIG = float(2**60)


def test_deleting_the_only_span_with_a_large_float_attribute_removes_its_index_row() -> None:
    write_spans([_row(1, T0_US, {"big": BIG}), _row(2, T0_US + 5, {"other": 1})], masker=Masker(()))
    doomed = SpanRecord.objects.get(span_id=f"{1:016x}").pk
    delete_spans([doomed], using="default")
    assert _stored_index() == _expected_index()


def test_retention_keeps_the_starts_of_a_large_float_attributes_row_exact() -> None:
    spans = [_row(1, T0_US, {"big": BIG}), _row(2, T0_US + 5, {"big": BIG})]
    write_spans(spans, masker=Masker(()))
    delete_spans([SpanRecord.objects.get(span_id=f"{1:016x}").pk], using="default")
    assert _stored_index() == _expected_index()


def test_a_span_with_a_huge_float_attribute_is_stored() -> None:
    # "n" + 301 digits does not fit the value column (varchar(257)) on PostgreSQL: the
    # whole batch's transaction fails and its spans are lost.
    write_spans([_row(1, T0_US, {"huge": 1e300}), _row(2, T0_US, {"k": "v"})], masker=Masker(()))
    assert SpanRecord.objects.count() == 2


def test_deleting_a_span_with_more_than_max_per_span_attributes_removes_its_rows() -> None:
    # The writer indexes the first MAX_PER_SPAN attributes in the span's own order; the
    # delete recomputes them from the stored JSON, which PostgreSQL's jsonb gives back
    # in its own key order (shorter keys first): the rows of the other keys stay.
    names = [f"a{i}" for i in reversed(range(attribute_index.MAX_PER_SPAN + 76))]
    write_spans(
        [_row(1, T0_US, dict.fromkeys(names, 1)), _row(2, T0_US + 5, {"other": 1})],
        masker=Masker(()),
    )
    delete_spans([SpanRecord.objects.get(span_id=f"{1:016x}").pk], using="default")
    assert _stored_index() == _expected_index()


def test_trace_summaries_are_upserted_in_trace_order() -> None:
    """Two writers whose batches share traces must lock their summaries in one order
    (PostgreSQL deadlocks otherwise): the upsert's rows are sorted by trace id."""
    from django.db import connection

    summaries: list[str] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "traces_tracesummary" in sql and sql.lstrip().upper().startswith("INSERT"):
            for chunk in params if many else [params]:
                summaries.extend(p for p in chunk if isinstance(p, str) and len(p) == 32)
        return execute(sql, params, many, context)

    def span(trace: int) -> SpanRow:
        return SpanRow(
            f"{trace:032x}", f"{trace:016x}", None, "op", "svc", "INTERNAL",
            T0_US, T0_US + 10, "UNSET", "", {}, [], {},
        )  # fmt: skip

    with connection.execute_wrapper(capture):
        write_spans([span(trace) for trace in (9, 3, 7, 1)], masker=Masker(()))
    assert summaries == [f"{trace:032x}" for trace in (1, 3, 7, 9)]
