"""The fast ingest path (protobuf → masked rows) against the previous one (protobuf → SDK
spans → the writer's masking and conversion): the same rows, and the same stored rows."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from bench._traces_data import sdk_spans
from dashboard.ingest.spans import Limits, convert
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.convert import span_rows
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.services import write_spans

from . import reference

T0 = 1_767_000_000_000_000_000
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
LIMITS = Limits(max_spans=50, max_attributes=6, max_events=2, max_value_length=40)
MASKER = Masker(DEFAULT_MASKED_KEYS)
# The old path's writer: masks whole strings, then truncates them as ingest does.
OLD_MASKER = reference.TruncatingMasker(DEFAULT_MASKED_KEYS, max_length=LIMITS.max_value_length)


def _value(value: Any) -> AnyValue:
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if value is None:
        return AnyValue()
    return AnyValue(string_value=value)


def _kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_value(value))


ATTRIBUTES: dict[str, Any] = {
    "http.url": "https://u:pw@example.com/x?api_key=abc123&next=%2Fy%3Ftoken%3Dzz",
    "api_key": "s3cret",
    "tags": ["Bearer abcdefghijk", 7, "plain"],
    "req": {"password": "pw", "n": 1, "inner": {"token": "t", "text": "password=shown"}},
    "blob": b"\x00\x01binary",
    "ratio": 0.5,
    "nan": math.nan,
    "long": "x" * 100,
}


def _span(span_id: int, **kw: Any) -> Span:
    span = Span(
        trace_id=kw.pop("trace_id", TRACE),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=kw.pop("parent", b""),
        name=kw.pop("name", f"op-{span_id}"),
        kind=kw.pop("kind", Span.SPAN_KIND_INTERNAL),
        start_time_unix_nano=kw.pop("start", T0 + span_id * 1_000),
        end_time_unix_nano=kw.pop("end", T0 + span_id * 1_000 + 5_000_000),
        **kw,
    )
    return span


def _fixture() -> bytes:
    parent = (1).to_bytes(8, "big")
    spans = [
        _span(1, kind=Span.SPAN_KIND_SERVER, attributes=[_kv(k, v) for k, v in ATTRIBUTES.items()]),
        _span(2, parent=parent, status=Status(code=2, message="password=hunter2 Bearer abcdefgh")),
        _span(3, parent=parent, status=Status(code=1, message="ignored when OK")),
        _span(4, parent=parent, kind=Span.SPAN_KIND_CONSUMER),  # remote by kind
        _span(5, parent=parent, flags=0x300),  # remote by flags
        _span(6, parent=parent, kind=Span.SPAN_KIND_SERVER, flags=0x100),  # local by flags
        _span(7, parent=b"\0" * 8, kind=9, end=0, name="n\0ul" + "y" * 300),
        _span(8, parent=parent, end=T0 - 10**9),  # ends before it starts
        _span(9, trace_id=b"\1" * 15),  # rejected
        _span(0),  # rejected: zero span id
    ]
    spans[1].events.add(name="exception", time_unix_nano=T0 + 1, attributes=[_kv("x", "sk-")])
    spans[1].events.add(name="untimed", attributes=[_kv("secret", "v"), _kv("t", "token: ab")])
    spans[1].events.add(name="beyond max_events")
    spans[0].attributes.extend([_kv("api_key", "again"), _kv("over", "the limit")])
    first = ResourceSpans(scope_spans=[ScopeSpans(spans=spans[:6])])
    first.resource.attributes.extend(
        [_kv("service.name", "worker"), _kv("db.password", "hunter2"), _kv("inst", "w-1")]
    )
    second = ResourceSpans(scope_spans=[ScopeSpans(spans=spans[6:])])  # no service.name
    third = ResourceSpans(scope_spans=[ScopeSpans(spans=[_span(10, trace_id=b"\2" * 16)])])
    third.resource.attributes.extend([_kv("service.name", 42)])
    return ExportTraceServiceRequest(resource_spans=[first, second, third]).SerializeToString()


def _both(body: bytes, limits: Limits = LIMITS) -> tuple[Any, Any]:
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    fast = convert(message.resource_spans, limits=limits, masker=MASKER)
    old = reference.convert(message.resource_spans, limits=limits, masker=MASKER)
    return fast, old


def test_rows_equal_the_previous_paths_rows_on_a_hostile_fixture() -> None:
    fast, old = _both(_fixture())
    old_rows, old_deltas = span_rows(old.spans, OLD_MASKER)
    assert fast.rows == old_rows
    assert span_rows(fast.rows, MASKER)[1] == old_deltas
    assert (fast.rejected, fast.reasons) == (old.rejected, old.reasons)
    assert fast.rejected == 2
    # The fixture does exercise masking, truncation and the root ranks.
    assert fast.rows[0].attributes["api_key"] == "***"
    assert fast.rows[0].resource["db.password"] == "***"
    assert {row.root_class for row in fast.rows} == {0, 1, 2}
    assert {row.service for row in fast.rows} == {"worker", "unknown_service"}


def test_rows_equal_the_previous_paths_rows_for_the_real_exporters_encoding() -> None:
    body = encode_spans(sdk_spans(200)).SerializeToString()
    limits = Limits(max_spans=10_000, max_attributes=128, max_events=128, max_value_length=4096)
    fast, old = _both(body, limits)
    old_masker = reference.TruncatingMasker(DEFAULT_MASKED_KEYS, max_length=4096)
    assert fast.rows == span_rows(old.spans, old_masker)[0]
    assert len(fast.rows) == 200


@pytest.mark.django_db
def test_stored_rows_equal_the_previous_paths_stored_rows() -> None:
    fast, old = _both(_fixture())

    def stored(items: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        write_spans(items, masker=OLD_MASKER)
        spans = list(SpanRecord.objects.order_by("trace_id", "span_id").values_list())
        traces = list(TraceSummary.objects.order_by("trace_id").values_list())
        SpanRecord.objects.all().delete()
        TraceSummary.objects.all().delete()
        return [row[1:] for row in spans], traces  # row[0]: the id

    assert stored(fast.rows) == stored(old.spans)


_scalars = (
    st.text(max_size=60)
    | st.sampled_from(["password=x", "Bearer abcdefg", "a:b@c", "%2Fapi_key%3Dv", "token: t"])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats()
    | st.binary(max_size=8)
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["k", "secret", "n", "Api-Key"]), children, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(["a", "b", "password", "x.token", "service.name", "n\0ul", "k" * 50])


@fuzzing(max_examples=150, deadline=None)
@given(
    attributes=st.lists(st.tuples(_keys, _values), max_size=8),
    resource=st.lists(st.tuples(_keys, _values), max_size=4),
    status=st.tuples(st.integers(0, 3), st.text(max_size=20)),
)
def test_rows_equal_the_previous_paths_rows_for_any_attributes(
    attributes: list[tuple[str, Any]], resource: list[tuple[str, Any]], status: tuple[int, str]
) -> None:
    span = _span(1, attributes=[_kv(k, v) for k, v in attributes])
    span.status.code, span.status.message = status
    span.events.add(name="e", attributes=[_kv(k, v) for k, v in attributes])
    group = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
    group.resource.attributes.extend(_kv(k, v) for k, v in resource)
    fast, old = _both(ExportTraceServiceRequest(resource_spans=[group]).SerializeToString())
    assert fast.rows == span_rows(old.spans, OLD_MASKER)[0]
