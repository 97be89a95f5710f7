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
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from dashboard.traces import attribute_index
from dashboard.traces.attribute_index import MAX_KEY, MAX_PER_SPAN, MAX_VALUE, encode
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.convert import SpanRow, to_datetime, to_us
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanAttribute, SpanRecord, TraceSummary
from dashboard.traces.search import TraceQuery, search_traces
from dashboard.traces.services import cleanup_spans, delete_spans, write_spans
from dashboard.traces.span_filters import indexed_attribute, with_attribute

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


def _stored_index() -> list[tuple[Any, ...]]:
    return sorted(SpanAttribute.objects.values_list(*attribute_index.COLUMNS))


def _expected_index() -> list[tuple[Any, ...]]:
    """The index rows the stored spans call for, computed from scratch."""
    spans = SpanRecord.objects.values_list("trace_id", "start", "attributes")
    return attribute_index.attribute_rows(
        (trace, to_us(start), attrs) for trace, start, attrs in spans
    )


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
    assert _stored_index() == _expected_index()
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
    assert SpanAttribute.objects.count() == 10 + 3  # k=i per span, s=x once per trace
    now = datetime.fromtimestamp(T0_US / 1e6, UTC)
    cleanup_spans(now=now, max_age=None, max_rows=4, chunk_size=3)
    kept = set(SpanRecord.objects.values_list("pk", flat=True))
    assert len(kept) == 4
    assert _stored_index() == _expected_index()
    assert SpanAttribute.objects.count() == 4 + 3  # k of each span kept, s of its 3 traces
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
    rows = attribute_index.attribute_rows([("t", 5, attributes), ("t", 9, {"a0": 0})])
    assert len(rows) == MAX_PER_SPAN
    assert ("a0", "n0", "t", 5, 9) in rows and ("a1", "n1", "t", 5, 5) in rows
    kept = sorted(attributes)[:MAX_PER_SPAN]  # key order, whatever the dict's order
    assert {key for key, *_ in rows} == set(kept)
    backwards = dict(reversed(attributes.items()))
    assert attribute_index.attribute_rows([("t", 5, backwards), ("t", 9, {"a0": 0})]) == rows


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_index_of_stored_spans() -> None:
    from django.core.management import call_command

    _clear()
    specs = [(0, 1, False, {}, {"k": 1, "s": "x", "l": [1]}), (1, 2, True, {"k": True}, {})]
    write_spans(_spans(specs), masker=Masker(()))
    written = _stored_index()
    call_command("migrate", "traces", "0005", verbosity=0)
    call_command("migrate", "traces", verbosity=0)
    assert _stored_index() == written and len(written) == 3


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


def _indexed_between(key: str, value: str, since: int | None, until: int | None) -> set[str]:
    rows = indexed_attribute(TraceQuery(attribute=(key, value)), since, until)
    if rows is None:  # a key or value the index does not hold: the JSON search answers
        return _reference_between(key, value, since, until)
    return set(rows.values_list("trace_id", flat=True))


def _reference_between(key: str, value: str, since: int | None, until: int | None) -> set[str]:
    spans = SpanRecord.objects.order_by()
    if since is not None:
        spans = spans.filter(start__gte=to_datetime(since))
    if until is not None:
        spans = spans.filter(start__lte=to_datetime(until))
    return set(with_attribute(spans, key, value).values_list("trace_id", flat=True))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(span_specs, min_size=1, max_size=6), min_size=1, max_size=3),
    window=st.tuples(st.none() | st.integers(0, 60), st.none() | st.integers(0, 60)),
    keep_from=st.integers(0, 60),
)
def test_a_time_bounded_attribute_search_finds_exactly_the_traces_with_a_matching_span_inside(
    batches: list[list[tuple[Any, ...]]], window: tuple[int | None, int | None], keep_from: int
) -> None:
    """Spans of one trace arrive in several batches (rows merged by upsert), and the
    window may fall between a trace's attribute spans: the index never finds a trace
    whose matching spans all lie outside the bounds, before and after retention."""
    _clear()
    for specs in batches:
        write_spans(_spans(specs), masker=Masker(DEFAULT_MASKED_KEYS))
    since, until = (None if s is None else T0_US + s * 1_000_000 for s in window)
    for key, value in _queries():
        assert _indexed_between(key, value, since, until) == _reference_between(
            key, value, since, until
        ), (key, value)
    assert _stored_index() == _expected_index()

    now = datetime.fromtimestamp(T0_US / 1e6, UTC) + timedelta(hours=1, seconds=keep_from)
    cleanup_spans(now=now, max_age=timedelta(hours=1), max_rows=None, chunk_size=2)
    assert _stored_index() == _expected_index()
    for key, value in _queries():
        assert _indexed_between(key, value, since, until) == _reference_between(
            key, value, since, until
        ), (key, value)


def test_a_trace_straddling_the_window_is_checked_against_its_spans() -> None:
    _clear()
    specs = [(0, 0, False, {}, {"k": "a"}), (0, 30, False, {}, {"k": "b"}),
             (0, 60, False, {}, {"k": "a"}), (1, 20, False, {}, {"k": "a"}),
             (1, 59, False, {}, {"k": "a"})]  # fmt: skip
    write_spans(_spans(specs), masker=Masker(()))
    # one row per trace and value, with the starts of its first and last span
    assert _stored_index() == [
        ("k", "sa", f"{1:032x}", T0_US, T0_US + 60_000_000),
        ("k", "sa", f"{2:032x}", T0_US + 20_000_000, T0_US + 59_000_000),
        ("k", "sb", f"{1:032x}", T0_US + 30_000_000, T0_US + 30_000_000),
    ]
    second = 1_000_000
    inside = _indexed_between("k", "a", T0_US + 10 * second, T0_US + 50 * second)
    assert inside == {f"{2:032x}"}  # trace 1 has k=a at 0s and 60s only
    assert _indexed_between("k", "b", T0_US + 10 * second, T0_US + 50 * second) == {f"{1:032x}"}
    assert _indexed_between("k", "a", T0_US + 60 * second, None) == {f"{1:032x}"}
    assert _indexed_between("k", "a", None, T0_US + 19 * second) == {f"{1:032x}"}


def test_retention_keeps_the_row_of_a_trace_that_still_has_spans_with_the_attribute() -> None:
    """A trace whose spans span the cut-off keeps its row, with the first start moved
    to its earliest remaining span; a value only its deleted spans had goes."""
    _clear()
    specs = [(0, 0, False, {}, {"k": "a", "old": 1}), (0, 40, False, {}, {"k": "a"}),
             (0, 50, False, {}, {"k": "a"}), (1, 5, False, {}, {"k": "a"})]  # fmt: skip
    write_spans(_spans(specs), masker=Masker(()))
    now = datetime.fromtimestamp(T0_US / 1e6, UTC) + timedelta(hours=1, seconds=30)
    cleanup_spans(now=now, max_age=timedelta(hours=1), max_rows=None)
    assert _stored_index() == [("k", "sa", f"{1:032x}", T0_US + 40_000_000, T0_US + 50_000_000)]
    assert _reference("old", "1") == _indexed_between("old", "1", None, None) == set()


def test_the_admin_delete_of_a_span_updates_its_traces_index_rows() -> None:
    _clear()
    specs = [(0, 0, False, {}, {"k": "a"}), (0, 9, False, {}, {"k": "a", "x": True})]
    write_spans(_spans(specs), masker=Masker(()))
    last = SpanRecord.objects.get(start=to_datetime(T0_US + 9_000_000))
    delete_spans([last.pk], using="default")
    assert _stored_index() == [("k", "sa", f"{1:032x}", T0_US, T0_US)]


def test_hostile_attributes_are_bounded_and_still_found_through_the_json() -> None:
    """Thousands of attributes, a 10,000-character key, the same attribute on every
    span of a trace: at most MAX_PER_SPAN rows a span, one row per trace and value."""
    _clear()
    many = {f"a{i}": i % 7 for i in range(5_000)} | {"K" * 10_000: "v", "s": "y" * 10_000}
    specs = [(0, i, False, {}, many) for i in range(3)] + [(1, 0, False, {}, {"same": 1})] * 50
    write_spans(_spans(specs), masker=Masker(()))
    assert SpanAttribute.objects.filter(trace_id=f"{1:032x}").count() == MAX_PER_SPAN
    assert SpanAttribute.objects.filter(trace_id=f"{2:032x}").count() == 1
    assert _stored_index() == _expected_index()
    assert _indexed("K" * 10_000, "v") == {f"{1:032x}"}  # not indexed: the JSON scan
    assert _indexed("same", "1") == {f"{2:032x}"}


@pytest.mark.django_db(transaction=True)
def test_the_0007_migration_merges_per_span_rows_in_batches(monkeypatch: Any) -> None:
    """Per-span rows of 0006 become one row per trace and value, merged across the
    migration's batches (one span per batch here)."""
    from importlib import import_module

    from django.core.management import call_command

    _clear()
    specs = [(0, 1, False, {}, {"k": 1}), (0, 5, False, {}, {"k": 1, "s": "x"}),
             (1, 2, True, {"k": True}, {}), (0, 3, False, {}, {"k": 1})]  # fmt: skip
    write_spans(_spans(specs), masker=Masker(()))
    written = _stored_index()
    assert ("k", "n1", f"{1:032x}", T0_US + 1_000_000, T0_US + 5_000_000) in written
    monkeypatch.setattr(
        import_module("dashboard.traces.migrations.0007_attribute_index_per_trace"), "BATCH", 1
    )
    call_command("migrate", "traces", "0006", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM traces_spanattribute")
        assert cursor.fetchone() == (5,)  # one per span and attribute
    call_command("migrate", "traces", verbosity=0)
    assert _stored_index() == written and len(written) == 3
