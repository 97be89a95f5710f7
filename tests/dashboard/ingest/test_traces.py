"""POST /v1/traces: the OTLP/HTTP receiver (encodings, answers, auth, limits, back-pressure)."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.test import Client
from google.rpc.status_pb2 import Status
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from dashboard.api import healthchecks, testing, throttle
from dashboard.ingest import stats as ingest_stats
from dashboard.ingest.decode import IngestError, gunzip, parse
from dashboard.ingest.spans import Limits, convert
from dashboard.traces import tracing
from dashboard.traces.convert import span_rows
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.processor import DatabaseSpanProcessor

URL = "/v1/traces"
PB = "application/x-protobuf"
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT = bytes.fromhex("b7ad6b7169203331")
CHILD = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_767_000_000_000_000_000  # ns since the epoch

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    throttle.reset()
    yield
    throttle.reset()


@pytest.fixture
def sender() -> dict[str, str]:
    user = testing.make_user("worker", "traces.ingest_spans")
    return testing.bearer(testing.token_for(user))


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, dict):
        inner = KeyValueList(values=[_kv(k, v) for k, v in value.items()])
        return KeyValue(key=key, value=AnyValue(kvlist_value=inner))
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(span_id: bytes = ROOT, parent: bytes = b"", trace_id: bytes = TRACE, **kw: Any) -> Span:
    attributes = kw.pop("attributes", {})
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=kw.pop("name", "job"),
        kind=kw.pop("kind", Span.SPAN_KIND_SERVER),
        start_time_unix_nano=kw.pop("start", T0),
        end_time_unix_nano=kw.pop("end", T0 + 5_000_000),
        attributes=[_kv(k, v) for k, v in attributes.items()],
        **kw,
    )


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size, length = bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes([number << 3 | 2]) + bytes(size) + payload


def _request(*spans: Span, service: str | None = "worker", **resource: Any) -> bytes:
    attributes = dict(resource)
    if service is not None:
        attributes["service.name"] = service
    group = ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])
    group.resource.attributes.extend(_kv(k, v) for k, v in attributes.items())
    return ExportTraceServiceRequest(resource_spans=[group]).SerializeToString()


def _post(client: Client, body: bytes, auth: dict[str, str], ctype: str = PB, **extra: Any) -> Any:
    return client.post(URL, data=body, content_type=ctype, **auth, **extra)


def _answer(response: Any) -> ExportTraceServiceResponse:
    assert response["Content-Type"] == PB
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    return answer


def _status(response: Any) -> Status:
    status = Status()
    status.ParseFromString(response.content)
    return status


# -- storage: the same pipeline as local spans ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_protobuf_spans_are_stored_under_their_own_service_masked(
    client: Client, sender: dict[str, str], no_request_spans: None
) -> None:
    tracing.processor().enabled = True  # type: ignore[union-attr]
    body = _request(
        _span(attributes={"job.id": 7, "api_key": "s3cret", "req": {"password": "pw", "n": 1}}),
        _span(CHILD, ROOT, name="step", kind=Span.SPAN_KIND_INTERNAL),
        **{"service.instance.id": "w-1", "db.password": "hunter2"},
    )
    response = _post(client, body, sender)
    assert response.status_code == 200
    assert not _answer(response).HasField("partial_success")
    assert tracing.flush()
    rows = {r.span_id: r for r in SpanRecord.objects.filter(trace_id=TRACE.hex())}
    assert set(rows) == {ROOT.hex(), CHILD.hex()}
    root, child = rows[ROOT.hex()], rows[CHILD.hex()]
    assert (root.service, root.kind, root.parent_span_id) == ("worker", "SERVER", None)
    assert child.parent_span_id == ROOT.hex()
    assert root.attributes == {"job.id": 7, "api_key": "***", "req": {"password": "***", "n": 1}}
    assert root.resource["service.instance.id"] == "w-1"
    assert root.resource["db.password"] == "***"
    assert root.duration_us == 5_000
    summary = TraceSummary.objects.get(trace_id=TRACE.hex())
    assert (summary.root_name, summary.root_service, summary.span_count) == ("job", "worker", 2)


@pytest.mark.django_db(transaction=True)
def test_json_with_hex_ids_string_int64_and_int_enums_is_stored_and_answered_in_json(
    client: Client, sender: dict[str, str], no_request_spans: None
) -> None:
    tracing.processor().enabled = True  # type: ignore[union-attr]
    payload = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "curl"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": TRACE.hex().upper(),
                                "spanId": CHILD.hex(),
                                "parentSpanId": ROOT.hex(),
                                "name": "from-json",
                                "kind": 3,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": T0 + 2_000_000,
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "42"}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                                "unknownField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = _post(client, json.dumps(payload).encode(), sender, "application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {}
    assert tracing.flush()
    row = SpanRecord.objects.get(trace_id=TRACE.hex())
    assert (row.name, row.service, row.kind, row.parent_span_id) == (
        "from-json",
        "curl",
        "CLIENT",
        ROOT.hex(),
    )
    assert (row.status, row.status_message, row.attributes) == (
        "ERROR",
        "boom",
        {"n": 42, "ok": True},
    )


@pytest.mark.django_db(transaction=True)
def test_gzip_body_is_accepted(
    client: Client, sender: dict[str, str], no_request_spans: None
) -> None:
    tracing.processor().enabled = True  # type: ignore[union-attr]
    body = gzip.compress(_request(_span()))
    response = _post(client, body, sender, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert tracing.flush()
    assert SpanRecord.objects.filter(service="worker").count() == 1


def test_missing_service_name_is_stored_as_unknown_service(sender: dict[str, str]) -> None:

    message = ExportTraceServiceRequest()
    message.ParseFromString(_request(_span(), service=None))
    limits = Limits(max_spans=10, max_attributes=10, max_events=10, max_value_length=10)
    rows = convert(message.resource_spans, limits=limits, masker=Masker(())).rows
    assert rows[0].resource["service.name"] == "unknown_service"
    assert rows[0].service == "unknown_service"


# -- partial success: invalid spans and limits -----------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"trace_id": b"\x01" * 15}, "invalid traceId"),
        ({"trace_id": b"\x00" * 16}, "invalid traceId"),
        ({"span_id": b"\x01" * 9}, "invalid spanId"),
        ({"span_id": b""}, "invalid spanId"),
        ({"parent": b"\x01" * 4}, "invalid parentSpanId"),
        ({"start": 0}, "without startTimeUnixNano"),
    ],
)
def test_invalid_spans_are_rejected_in_partial_success_and_the_rest_kept(
    client: Client, sender: dict[str, str], bad: dict[str, Any], reason: str
) -> None:
    good = _span(CHILD, name="good")
    fields = {"span_id": ROOT, **bad}
    response = _post(client, _request(_span(**fields), good), sender)
    assert response.status_code == 200
    partial = _answer(response).partial_success
    assert partial.rejected_spans == 1
    assert reason in partial.error_message


def test_json_ids_that_are_not_hex_are_rejected_per_span(
    client: Client, sender: dict[str, str]
) -> None:
    span = {"traceId": "zz" * 16, "spanId": ROOT.hex(), "name": "x", "startTimeUnixNano": T0}
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    response = _post(client, json.dumps(payload).encode(), sender, "application/json")
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_spans_beyond_the_per_request_limit_are_rejected(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_SPANS = 2
    spans = [_span(bytes([0, 0, 0, 0, 0, 0, 0, i + 1])) for i in range(5)]
    partial = _answer(_post(client, _request(*spans), sender)).partial_success
    assert partial.rejected_spans == 3
    assert "beyond the limit of 2" in partial.error_message


def test_attribute_count_and_length_caps_truncate_and_keep_the_span(settings: Any) -> None:

    limits = Limits(max_spans=10, max_attributes=3, max_events=1, max_value_length=5)
    span = _span(attributes={f"k{i}": "x" * 50 for i in range(10)})
    span.events.add(name="e1", time_unix_nano=T0)
    span.events.add(name="e2", time_unix_nano=T0)
    message = ExportTraceServiceRequest()
    message.ParseFromString(_request(span, **{"nul\0key": "a\0b"}))
    converted = convert(message.resource_spans, limits=limits, masker=Masker(()))
    assert converted.rejected == 0
    (stored,) = converted.rows
    assert stored.attributes == {"k0": "xxxxx", "k1": "xxxxx", "k2": "xxxxx"}
    assert len(stored.events) == 1
    assert stored.resource["nulke"] == "ab"


# -- bad payloads: 400 / 413 / 415 with a reason, never a 500 ---------------------------


@pytest.mark.parametrize(
    "body",
    [
        _request(_span())[:-7],  # truncated protobuf
        b"\xff\xfe garbage \x00\x01",
        b"\x0a\xff\xff\xff\xff\x0f",  # a length far beyond the body
    ],
)
def test_bad_protobuf_is_400_with_a_status_body(
    client: Client, sender: dict[str, str], body: bytes
) -> None:
    response = _post(client, body, sender)
    assert response.status_code == 400
    assert "ExportTraceServiceRequest" in _status(response).message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"resourceSpans": 5}', "ExportTraceServiceRequest"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "Export"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": [1]}]}]}]}', "Export"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7}]}]}]}', "Export"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "x"}]}]}]}', "Ex"),
        (b'{"a": "\\ud800"}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_bad_json_is_400_with_a_json_status_body(
    client: Client, sender: dict[str, str], body: bytes, words: str
) -> None:
    response = _post(client, body, sender, "application/json")
    assert response.status_code == 400
    assert words in response.json()["message"]


def test_deeply_nested_attribute_values_are_400_not_a_crash(
    client: Client, sender: dict[str, str]
) -> None:
    depth = 300
    value = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth
    value += '{"stringValue": "x"}' + "}]}}" * depth
    span = f'{{"traceId": "{TRACE.hex()}", "spanId": "{ROOT.hex()}", "startTimeUnixNano": {T0}'
    span += f', "attributes": [{{"key": "deep", "value": {value}}}]}}'
    body = f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{span}]}}]}}]}}'
    response = _post(client, body.encode(), sender, "application/json")
    assert response.status_code == 400
    # The same in protobuf, encoded by hand (the library refuses to build it).
    nested = AnyValue(string_value="x").SerializeToString()
    for _ in range(depth):  # AnyValue.kvlist_value(6) > KeyValueList.values(1) > KeyValue
        nested = _field(6, _field(1, _field(1, b"k") + _field(2, nested)))
    span_pb = _span().SerializeToString() + _field(9, _field(1, b"deep") + _field(2, nested))
    body_pb = _field(1, _field(2, _field(2, span_pb)))  # resource_spans > scope_spans > spans
    response = _post(client, body_pb, sender)
    assert response.status_code == 400


def test_nesting_within_the_parsers_limits_is_stored_with_a_placeholder() -> None:

    nested = AnyValue(string_value="x")
    for _ in range(20):
        nested = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=nested)]))
    span = _span()
    span.attributes.add(key="deep", value=nested)
    message = ExportTraceServiceRequest()
    message.ParseFromString(_request(span))
    limits = Limits(max_spans=10, max_attributes=10, max_events=10, max_value_length=10)
    (stored,) = convert(message.resource_spans, limits=limits, masker=Masker(())).rows
    value = stored.attributes["deep"]
    for _ in range(8):
        value = value["k"]
    assert value == "<nested too deeply>"


def test_gzip_bomb_is_413_and_never_inflated_beyond_the_limit(
    client: Client, sender: dict[str, str], settings: Any
) -> None:

    settings.INGEST_MAX_BODY_BYTES = 1024 * 1024
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KB on the wire
    response = _post(client, bomb, sender, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert "once decompressed" in _status(response).message
    with pytest.raises(IngestError) as caught:
        gunzip(bomb, limit=10)
    assert caught.value.status == 413


def test_gzip_members_are_all_read_and_truncated_gzip_is_400(
    client: Client, sender: dict[str, str]
) -> None:

    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), limit=10) == b"abcd"
    truncated = gzip.compress(_request(_span()))[:-10]
    response = _post(client, truncated, sender, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400
    response = _post(client, b"not gzip at all", sender, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400


def test_body_over_the_limit_is_413(client: Client, sender: dict[str, str], settings: Any) -> None:
    settings.INGEST_MAX_BODY_BYTES = 100
    response = _post(client, _request(*[_span(name="n" * 50)] * 5), sender)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("ctype", "extra"),
    [("text/plain", {}), ("application/grpc", {}), (PB, {"HTTP_CONTENT_ENCODING": "br"})],
)
def test_unsupported_content_type_or_encoding_is_415(
    client: Client, sender: dict[str, str], ctype: str, extra: dict[str, str]
) -> None:
    assert _post(client, _request(_span()), sender, ctype, **extra).status_code == 415


def test_only_post_is_allowed(client: Client, sender: dict[str, str]) -> None:
    assert client.get(URL, **sender).status_code == 405


# -- auth: a bearer token with traces.ingest_spans, and nothing else ---------------------


def test_no_or_bad_token_is_401_with_a_bearer_challenge(client: Client) -> None:
    response = _post(client, _request(_span()), {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    bad = {"HTTP_AUTHORIZATION": "Bearer rdt_0123456789abcdef_" + "x" * 43}
    assert _post(client, _request(_span()), bad).status_code == 401


def test_token_without_the_ingest_permission_is_403(client: Client) -> None:
    viewer = testing.make_user("vera", "dashboard.view_dashboard")
    response = _post(client, _request(_span()), testing.bearer(testing.token_for(viewer)))
    assert response.status_code == 403
    assert "traces.ingest_spans" in _status(response).message


def test_a_session_is_not_accepted_even_for_a_user_with_the_permission(client: Client) -> None:
    client.force_login(testing.make_user("worker", "traces.ingest_spans"))
    response = _post(client, _request(_span()), {})
    assert response.status_code == 403
    assert "not a session" in _status(response).message


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/traces/",
        "/alerts/",
        "/simulation/",
        "/api/observability/traces",
        "/api/observability/metrics",
        "/api/observability/circuit-breakers",
        "/api/workflows",
    ],
)
def test_an_ingest_only_user_can_read_nothing(client: Client, url: str) -> None:
    user = testing.make_user("worker", "traces.ingest_spans")
    token = testing.bearer(testing.token_for(user))
    if url.startswith("/api/"):
        assert client.get(url, **token).status_code == 403
    client.force_login(user)
    assert client.get(url).status_code == 403


def test_ingest_needs_no_csrf_token(sender: dict[str, str]) -> None:
    strict = Client(enforce_csrf_checks=True)
    assert _post(strict, _request(_span()), sender).status_code == 200


# -- back-pressure ----------------------------------------------------------------------


@pytest.fixture
def stuck_processor(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseSpanProcessor]:
    """A real processor with room for 3 spans whose writer waits until released."""
    release = threading.Event()
    written: list[Any] = []

    def writer(spans: Any) -> int:
        release.wait(10)
        written.extend(spans)
        return len(spans)

    processor = DatabaseSpanProcessor(writer=writer, max_queue=3, max_batch=1, interval=0.01)
    processor.release, processor.written = release, written  # type: ignore[attr-defined]
    monkeypatch.setattr(tracing, "_processor", processor)
    monkeypatch.setattr(healthchecks, "_last_refused", None)
    yield processor
    release.set()
    processor.shutdown()


def test_full_queue_is_503_with_retry_after_counted_and_in_health(
    client: Client, sender: dict[str, str], stuck_processor: DatabaseSpanProcessor
) -> None:
    before = ingest_stats.snapshot()
    assert healthchecks.check_span_ingest()["status"] == "ok"
    spans = [_span(bytes([0, 0, 0, 0, 0, 0, 1, i + 1])) for i in range(4)]
    response = _post(client, _request(*spans), sender)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "queue is full" in _status(response).message
    after = ingest_stats.snapshot()
    assert after["refused_requests"] == before["refused_requests"] + 1
    assert after["refused_spans"] == before["refused_spans"] + 4
    assert stuck_processor.stats()["dropped"] == 0  # refused, not dropped: the sender retries
    check = healthchecks.check_span_ingest()
    assert check["status"] == "degraded"
    assert "4 ingested spans refused" in check["detail"]
    assert healthchecks.check_span_ingest()["status"] == "ok"  # nothing new since


def test_spans_that_fit_are_queued_and_reach_the_writer(
    client: Client, sender: dict[str, str], stuck_processor: DatabaseSpanProcessor
) -> None:
    response = _post(client, _request(_span(name="fits")), sender)
    assert response.status_code == 200
    assert not _answer(response).HasField("partial_success")
    stuck_processor.release.set()  # type: ignore[attr-defined]
    assert stuck_processor.force_flush()
    assert [span.name for span in stuck_processor.written] == ["fits"]  # type: ignore[attr-defined]


def test_traces_disabled_is_404(client: Client, sender: dict[str, str], monkeypatch: Any) -> None:
    monkeypatch.setattr(tracing, "_processor", None)
    response = _post(client, _request(_span()), sender)
    assert response.status_code == 404
    assert "TRACES_ENABLED" in _status(response).message


def _mutate(data: st.DataObject) -> bytes:
    body = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    return bytes(body[: data.draw(st.integers(0, len(body)))])


def _json_children(children: Any) -> Any:
    keys = st.sampled_from(
        [
            "traceId",
            "spanId",
            "name",
            "kind",
            "attributes",
            "key",
            "value",
            "stringValue",
            "kvlistValue",
            "arrayValue",
            "values",
            "intValue",
            "startTimeUnixNano",
            "status",
        ]
    )
    return st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4)


def _decode_or_refuse(body: bytes, content_type: str) -> None:

    limits = Limits(max_spans=10, max_attributes=10, max_events=10, max_value_length=100)
    try:
        message = parse(ExportTraceServiceRequest(), body, content_type=content_type)
    except IngestError as exc:
        assert 400 <= exc.status < 500
        return
    converted = convert(message.resource_spans, limits=limits, masker=Masker(["key"]))

    rows, _ = span_rows(converted.rows, Masker(["key"]))
    orjson.dumps([row.attributes for row in rows])  # storable as JSON


# -- hostile bytes, fuzzed: only IngestError (a 4xx) ever comes out -----------------------

VALID = _request(_span(attributes={"a": "b", "n": 1}), _span(CHILD, ROOT))


@fuzzing(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.builds(_mutate, st.data()))
def test_fuzzed_protobuf_bodies_give_a_4xx_or_spans_never_another_error(body: bytes) -> None:
    _decode_or_refuse(body, PB)


@fuzzing(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), _json_children))
def test_fuzzed_json_bodies_give_a_4xx_or_spans_never_another_error(value: Any) -> None:
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": [value, {"attributes": value}]}]}]}
    _decode_or_refuse(json.dumps(payload).encode(), "application/json")


@pytest.mark.django_db(transaction=True)
def test_ingested_spans_are_masked_with_the_configured_value_patterns(
    client: Client, sender: dict[str, str], no_request_spans: None, settings: Any
) -> None:
    # Rows are masked in the request, so the request must use the writer's rules.
    settings.TRACES_MASKED_VALUE_PATTERNS = [r"\bcustom-[0-9]+"]
    tracing.processor().enabled = True  # type: ignore[union-attr]
    body = _request(_span(attributes={"note": "id custom-123 sk-abcdefghijklmnopqrstu"}))
    assert _post(client, body, sender).status_code == 200
    assert tracing.flush()
    row = SpanRecord.objects.get(trace_id=TRACE.hex())
    assert row.attributes["note"] == "id *** sk-abcdefghijklmnopqrstu"
