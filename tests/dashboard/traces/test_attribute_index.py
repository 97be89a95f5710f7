"""The span-attribute index answers attribute search exactly as the JSON search did.

Random spans go through both writers' path (``write_spans`` with SDK spans, masked
there, and with OTLP-ingest SpanRows), then every ``key=value`` search is answered
by ``search_traces`` (the index) and by the JSON filter it replaced, on whichever
database the tests run (SQLite, or PostgreSQL under ``make test-postgres``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from dashboard.traces import attribute_index
from dashboard.traces.attribute_index import MAX_KEY, MAX_PER_SPAN, MAX_VALUE, SHIFT, encode
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.convert import SpanRow
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanAttribute, SpanRecord, TraceSummary
from dashboard.traces.search import TraceQuery, search_traces
from dashboard.traces.services import cleanup_spans, write_spans
from dashboard.traces.span_filters import with_attribute

pytestmark = pytest.mark.django_db

T0_US = 1_800_000_000 * 1_000_000
KEYS = ["k", "user.id", "password", "n", "x" * (MAX_KEY + 1)]
scalars = st.one_of(
    st.sampled_from(["1", "007", "true", "false", "2.0", "u-1", "***", "", 'say "hi"', "é"]),
    st.text(alphabet="ab1.", max_size=3),
    st.just("y" * (MAX_VALUE + 1)),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.5, 1.0, 2.0, -0.0, 1e20, 2.5e-3]),
)
sdk_values = st.one_of(scalars, st.lists(st.integers(0, 2), min_size=1, max_size=2).map(tuple))
ingest_values = st.one_of(
    scalars,
    st.none(),
    st.lists(st.sampled_from(["1", 1, True]), max_size=2),
    st.dictionaries(st.just("a"), st.just(1), max_size=1),
)
span_specs = st.tuples(
    st.integers(0, 5),  # trace
    st.integers(0, 59),  # start, in seconds after T0
    st.booleans(),  # SDK span (masked by the writer) or an ingest SpanRow
    st.dictionaries(st.sampled_from(KEYS), sdk_values, max_size=4),
    st.dictionaries(st.sampled_from(KEYS), ingest_values, max_size=4),
)


def spelled(value: Any) -> str:
    """How a user would type a stored value in the search box."""
    if isinstance(value, str):
        return value
    return json.dumps(value)  # PostgreSQL reads 1e20 back as an int beyond 64 bits


def _spans(specs: list[tuple[Any, ...]]) -> list[ReadableSpan | SpanRow]:
    resource = Resource.create({"service.name": "svc"})
    spans: list[ReadableSpan | SpanRow] = []
    for i, (trace, second, sdk, sdk_attrs, ingest_attrs) in enumerate(specs):
        start = T0_US + second * 1_000_000
        if sdk:
            context = SpanContext(trace + 1, i + 1, is_remote=False, trace_flags=TraceFlags(1))
            spans.append(
                ReadableSpan(
                    name="op",
                    context=context,
                    attributes=sdk_attrs,
                    start_time=start * 1000,
                    end_time=(start + 10) * 1000,
                    resource=resource,
                )
            )
        else:
            spans.append(
                SpanRow(
                    f"{trace + 1:032x}", f"{i + 1:016x}", None, "op", "svc", "INTERNAL",
                    start, start + 10, "UNSET", "", ingest_attrs, [], {},
                )
            )  # fmt: skip
    return spans


def _reference(key: str, value: str) -> set[str]:
    spans = with_attribute(SpanRecord.objects.order_by(), key, value)
    return set(spans.values_list("trace_id", flat=True))


def _indexed(key: str, value: str) -> set[str]:
    found = search_traces(query=TraceQuery(attribute=(key, value), per_page=100))
    return {row.trace_id for row in found.page.rows}


def _queries() -> set[tuple[str, str]]:
    queries = {("k", v) for v in ("1", "1.0", "1e0", "2", "2.0", "true", "0", "-0", "1e20")}
    for attributes in SpanRecord.objects.values_list("attributes", flat=True):
        for key, value in attributes.items():
            if isinstance(value, str | bool | int | float):
                queries.add((key, spelled(value)))
    return queries


def _clear() -> None:
    SpanAttribute.objects.all().delete()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=st.lists(span_specs, min_size=1, max_size=12), keep_from=st.integers(0, 60))
def test_the_index_finds_what_the_json_search_found_before_and_after_retention(
    specs: list[tuple[Any, ...]], keep_from: int
) -> None:
    _clear()
    write_spans(_spans(specs), masker=Masker(DEFAULT_MASKED_KEYS))
    for key, value in _queries():
        assert _indexed(key, value) == _reference(key, value), (key, value)

    now = datetime.fromtimestamp(T0_US / 1e6, UTC) + timedelta(hours=1, seconds=keep_from)
    cleanup_spans(now=now, max_age=timedelta(hours=1), max_rows=None)
    kept = set(SpanRecord.objects.values_list("pk", flat=True))
    assert {pk >> SHIFT for pk in SpanAttribute.objects.values_list("pk", flat=True)} <= kept
    for key, value in _queries() | {("k", "1"), ("password", "***")}:
        assert _indexed(key, value) == _reference(key, value), (key, value)


def test_masked_values_are_indexed_as_stored() -> None:
    _clear()
    (row,) = _spans([(0, 0, True, {"password": "hunter2", "user.id": "u-1"}, {})])
    write_spans([row], masker=Masker(DEFAULT_MASKED_KEYS))
    stored = dict(SpanAttribute.objects.values_list("key", "value"))
    assert stored == {"password": "s***", "user.id": "su-1"}
    assert _indexed("password", "hunter2") == set()
    assert _indexed("password", "***") == {f"{1:032x}"}


def test_retention_by_row_count_deletes_the_index_rows_of_the_spans_it_deletes() -> None:
    _clear()
    specs = [(i % 3, i, False, {}, {"k": i, "s": "x"}) for i in range(10)]
    write_spans(_spans(specs), masker=Masker(()))
    assert SpanAttribute.objects.count() == 20
    now = datetime.fromtimestamp(T0_US / 1e6, UTC)
    cleanup_spans(now=now, max_age=None, max_rows=4, chunk_size=3)
    kept = set(SpanRecord.objects.values_list("pk", flat=True))
    assert len(kept) == 4
    spans = sorted(pk >> SHIFT for pk in SpanAttribute.objects.values_list("pk", flat=True))
    assert spans == sorted([*kept, *kept])
    assert _indexed("k", "9") == {f"{1:032x}"} and _indexed("k", "0") == set()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("u-1", "su-1"),
        ("", "s"),
        (True, "btrue"),
        (False, "bfalse"),
        (200, "n200"),
        (200.0, "n200"),
        (-0.0, "n0"),
        (0.5, "n0.5"),
        (1e20, "n100000000000000000000"),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
        ("y" * MAX_VALUE, "s" + "y" * MAX_VALUE),
        ("y" * (MAX_VALUE + 1), None),
    ],
)
def test_encode_spells_each_scalar_once(value: Any, text: str | None) -> None:
    assert encode(value) == text


def test_a_key_or_value_the_index_does_not_hold_is_searched_in_the_json() -> None:
    assert attribute_index.searchable("k", "2e2") == ["s2e2", "n200"]
    assert attribute_index.searchable("k", "true") == ["strue", "btrue"]
    assert attribute_index.searchable("k" * (MAX_KEY + 1), "1") is None
    assert attribute_index.searchable("k", "y" * (MAX_VALUE + 1)) is None


def test_at_most_max_per_span_attributes_of_a_span_are_indexed() -> None:
    attributes = {f"a{i}": i for i in range(MAX_PER_SPAN + 5)} | {"l": [1]}
    rows = attribute_index.attribute_rows([(7, "t", 5, attributes)])
    assert len(rows) == MAX_PER_SPAN
    assert rows[0] == (7 << SHIFT, "t", "a0", "n0", 5)
    assert rows[-1][0] == (7 << SHIFT) + MAX_PER_SPAN - 1 < 8 << SHIFT


def test_span_ranges_merge_consecutive_spans() -> None:
    assert attribute_index.span_ranges([5, 3, 4, 9]) == [
        (3 << SHIFT, 6 << SHIFT),
        (9 << SHIFT, 10 << SHIFT),
    ]
    assert attribute_index.span_ranges([]) == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_index_of_stored_spans() -> None:
    from django.core.management import call_command

    _clear()
    specs = [(0, 1, False, {}, {"k": 1, "s": "x", "l": [1]}), (1, 2, True, {"k": True}, {})]
    write_spans(_spans(specs), masker=Masker(()))
    written = sorted(
        SpanAttribute.objects.values_list("id", "trace_id", "key", "value", "start_us")
    )
    call_command("migrate", "traces", "0005", verbosity=0)
    call_command("migrate", "traces", verbosity=0)
    backfilled = SpanAttribute.objects.values_list("id", "trace_id", "key", "value", "start_us")
    assert sorted(backfilled) == written and len(written) == 3


def test_an_attribute_past_the_old_128_cap_is_found_by_attribute_alone() -> None:
    """The index holds as many attributes a span as ingest may keep: the 150th of 200
    is found by attribute alone, as by a combined (JSON) filter."""
    attributes = {f"a{i}": i for i in range(200)}
    row = SpanRow(
        "1" * 32,
        "2" * 16,
        None,
        "op",
        "svc",
        "INTERNAL",
        T0_US,
        T0_US + 10,
        "UNSET",
        "",
        attributes,
        [],
        {},
    )
    write_spans([row], masker=Masker(DEFAULT_MASKED_KEYS))
    alone = search_traces(query=TraceQuery(attribute=("a150", "150"))).page.rows
    combined = search_traces(query=TraceQuery(attribute=("a150", "150"), service="svc")).page.rows
    assert [r.trace_id for r in alone] == [r.trace_id for r in combined] == ["1" * 32]


def test_ingest_may_not_keep_more_attributes_than_the_index_holds(settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from dashboard.ingest import conf

    settings.INGEST_MAX_ATTRIBUTES = MAX_PER_SPAN
    assert conf.max_attributes() == MAX_PER_SPAN
    settings.INGEST_MAX_ATTRIBUTES = MAX_PER_SPAN + 1
    with pytest.raises(ImproperlyConfigured, match="at most"):
        conf.max_attributes()
