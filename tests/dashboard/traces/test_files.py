"""A trace as an OTLP JSON file: download, upload to view (never stored), round trip."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from google.protobuf.json_format import ParseDict
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Link, SpanContext, Status, StatusCode

from dashboard.traces.models import SpanRecord, TraceSummary

from .test_views import Builder, sid, tid

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_request_spans")]

UPLOAD = "/traces/upload/"


@pytest.fixture
def viewer(client: Client) -> Client:
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


@pytest.fixture
def checkout() -> dict[str, trace.Span]:
    """Two services, an error, an event, a link, attributes of every type."""
    b = Builder()
    root = b.span(
        "POST /checkout",
        ago=5,
        ms=200,
        end=False,
        attributes={"http.status_code": 201, "ok": True, "ratio": 0.5, "tags": ["a", "b"]},
    )
    link = Link(SpanContext(0x1234, 0x5678, is_remote=True), {"why": "retry"})
    start = b.now_ns - int(4.9e9)
    pay = b.tracer("payments").start_span(
        "charge",
        context=trace.set_span_in_context(root),
        links=[link],
        start_time=start,
        kind=trace.SpanKind.CLIENT,
    )
    pay.add_event("card.checked", {"card.brand": "visa"}, timestamp=start + 1_000_000)
    pay.set_status(Status(StatusCode.ERROR, "declined"))
    pay.end(end_time=start + 50_000_000)
    root.end(end_time=b.now_ns - int(5e9) + int(200e6))
    b.save()
    return {"root": root, "pay": pay}


def _download(client: Client, trace_id: str) -> Any:
    return client.get(reverse("traces:download", args=[trace_id]))


def _upload(client: Client, content: bytes, name: str = "trace.json") -> Any:
    return client.post(UPLOAD, {"file": SimpleUploadedFile(name, content)})


def _rows(response: Any) -> list[tuple[str, str]]:
    """(span id, name) of each waterfall row."""
    html = response.content.decode()
    return re.findall(r'data-span="([0-9a-f]{16})"[^>]*>.*?class="wf-link"[^>]*>([^<]*)<', html)


# ---- download -----------------------------------------------------------------------------


def test_download_is_otlp_json_grouped_by_resource(
    viewer: Client, checkout: dict[str, trace.Span]
) -> None:
    trace_id = tid(checkout["root"])
    response = _download(viewer, trace_id)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert f'filename="trace-{trace_id}.json"' in response["Content-Disposition"]
    data = orjson.loads(response.content)
    services = {}
    for group in data["resourceSpans"]:
        resource = {kv["key"]: kv["value"] for kv in group["resource"]["attributes"]}
        (scope,) = group["scopeSpans"]
        services[resource["service.name"]["stringValue"]] = scope["spans"]
    assert set(services) == {"shop", "payments"}
    (root,) = services["shop"]
    (pay,) = services["payments"]
    assert root["traceId"] == trace_id and root["spanId"] == sid(checkout["root"])
    assert "parentSpanId" not in root
    assert pay["parentSpanId"] == sid(checkout["root"])
    assert (root["kind"], pay["kind"]) == (1, 3)  # INTERNAL, CLIENT as enum ints
    assert pay["status"] == {"code": 2, "message": "declined"}
    attributes = {kv["key"]: kv["value"] for kv in root["attributes"]}
    assert attributes["http.status_code"] == {"intValue": "201"}  # int64 as a string
    assert attributes["ok"] == {"boolValue": True}
    assert attributes["ratio"] == {"doubleValue": 0.5}
    assert attributes["tags"] == {
        "arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}
    }
    assert int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"]) == 200_000_000
    (event,) = pay["events"]
    assert event["name"] == "card.checked"
    assert int(event["timeUnixNano"]) - int(pay["startTimeUnixNano"]) == 1_000_000
    (link,) = pay["links"]
    assert link["traceId"] == f"{0x1234:032x}" and link["spanId"] == f"{0x5678:016x}"


def test_download_is_a_valid_export_request_for_the_protobuf_json_mapping(
    viewer: Client, checkout: dict[str, trace.Span]
) -> None:
    # What any OTLP receiver does with it: the proto3 JSON mapping (ids aside, as OTLP says).
    data = orjson.loads(_download(viewer, tid(checkout["root"])).content)
    for group in data["resourceSpans"]:
        for span in group["scopeSpans"][0]["spans"]:
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in span:
                    span[key] = ""
            for link in span["links"]:
                link["traceId"] = link["spanId"] = ""
    message = ParseDict(data, ExportTraceServiceRequest())
    assert sum(len(g.scope_spans[0].spans) for g in message.resource_spans) == 2


def test_download_of_unknown_or_bad_ids_is_404_with_a_message(viewer: Client) -> None:
    for trace_id in ("ab" * 16, "nothex", "AB" * 16):
        response = _download(viewer, trace_id)
        assert response.status_code == 404
        assert b"Trace not found" in response.content


def test_download_and_upload_need_login_and_the_view_permission(
    client: Client, checkout: dict[str, trace.Span]
) -> None:
    url = reverse("traces:download", args=[tid(checkout["root"])])
    assert client.get(url).status_code == 302
    assert _upload(client, b"{}").status_code == 302
    client.force_login(User.objects.create_user("nobody"))
    assert client.get(url).status_code == 403
    assert client.get(UPLOAD).status_code == 403
    assert _upload(client, b"{}").status_code == 403


# ---- upload ---------------------------------------------------------------------------------


def test_round_trip_download_then_upload_shows_the_same_spans_and_stores_nothing(
    viewer: Client, checkout: dict[str, trace.Span]
) -> None:
    trace_id = tid(checkout["root"])
    page = viewer.get(reverse("traces:trace", args=[trace_id]))
    content = _download(viewer, trace_id).content
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    shown = _upload(viewer, content)
    assert shown.status_code == 200
    assert _rows(shown) == _rows(page)
    assert len(_rows(shown)) == 2
    html = shown.content.decode()
    assert "nothing was stored" in html
    assert trace_id in html and "declined" in html and "card.checked" in html
    assert "retry" in html and f"{0x5678:016x}" in html  # the link survived the round trip
    assert html.count('class="resource uploaded-resource"') == 2  # shop and payments, once
    assert f'<template id="span-{sid(checkout["pay"])}">' in html
    assert 'class="wf-crit"' in html  # the critical path is drawn for uploads too
    assert not SpanRecord.objects.exists() and not TraceSummary.objects.exists()


def test_a_gzipped_upload_is_shown(viewer: Client, checkout: dict[str, trace.Span]) -> None:
    content = gzip.compress(_download(viewer, tid(checkout["root"])).content)
    response = _upload(viewer, content, name="trace.json.gz")
    assert response.status_code == 200
    assert len(_rows(response)) == 2


def test_an_upload_is_masked_like_stored_spans(viewer: Client) -> None:
    payload = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "name": "login",
                                "startTimeUnixNano": "1767000000000000000",
                                "endTimeUnixNano": "1767000000001000000",
                                "attributes": [
                                    {"key": "password", "value": {"stringValue": "hunter2"}}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    html = _upload(viewer, json.dumps(payload).encode()).content.decode()
    assert "login" in html and "unknown_service" in html
    assert "hunter2" not in html


def test_a_file_with_several_traces_shows_the_first_and_says_so(viewer: Client) -> None:
    def span(trace_id: str, name: str) -> dict[str, Any]:
        return {
            "traceId": trace_id,
            "spanId": "cd" * 8,
            "name": name,
            "startTimeUnixNano": "1767000000000000000",
            "endTimeUnixNano": "1767000000001000000",
        }

    spans = [span("ab" * 16, "first"), span("ef" * 16, "second")]
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    response = _upload(viewer, json.dumps(payload).encode())
    assert [name for _, name in _rows(response)] == ["first"]
    assert "1 more trace" in response.content.decode()


def test_upload_beyond_the_span_limit_shows_the_rest_counted(viewer: Client, settings: Any) -> None:
    settings.TRACES_UPLOAD_MAX_SPANS = 3
    spans = [
        {
            "traceId": "ab" * 16,
            "spanId": f"{i + 1:016x}",
            "name": f"s{i}",
            "startTimeUnixNano": str(1767000000000000000 + i),
            "endTimeUnixNano": "1767000000001000000",
        }
        for i in range(5)
    ]
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    response = _upload(viewer, json.dumps(payload).encode())
    assert response.status_code == 200
    assert len(_rows(response)) == 3
    assert "2 spans not shown" in response.content.decode()


def test_upload_over_the_size_limit_is_413(viewer: Client, settings: Any) -> None:
    settings.TRACES_UPLOAD_MAX_BYTES = 1_000
    response = _upload(viewer, b" " * 1_001)
    assert response.status_code == 413
    assert b"larger than 1000 bytes" in response.content


def test_a_gzip_bomb_is_refused_once_it_inflates_past_the_limit(
    viewer: Client, settings: Any
) -> None:
    settings.TRACES_UPLOAD_MAX_BYTES = 10_000
    bomb = gzip.compress(b"{" + b" " * 5_000_000)
    assert len(bomb) < 10_000
    response = _upload(viewer, bomb)
    assert response.status_code == 413
    assert b"once decompressed" in response.content


def test_a_huge_declared_body_is_refused_before_it_is_parsed(viewer: Client, settings: Any) -> None:
    settings.TRACES_UPLOAD_MAX_BYTES = 1_000
    response = viewer.post(
        UPLOAD, b"x", content_type="multipart/form-data; boundary=z", CONTENT_LENGTH="10000000"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no span to show"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"resourceSpans": "x"}', "not a valid ExportTraceServiceRequest"),
        (b'{"resourceSpans": []}', "no span to show"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "1"}]}]}]}',
            "invalid traceId",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"\x1f\x8b\x08garbage", "not valid gzip"),
    ],
)
def test_hostile_uploads_are_400_with_a_reason(
    viewer: Client, content: bytes, message: str
) -> None:
    response = _upload(viewer, content)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not SpanRecord.objects.exists()


def test_upload_without_a_file_is_400(viewer: Client) -> None:
    response = viewer.post(UPLOAD, {})
    assert response.status_code == 400
    assert b"Choose an OTLP/JSON file" in response.content


def test_upload_needs_the_csrf_token(checkout: dict[str, trace.Span]) -> None:
    client = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    assert client.get(UPLOAD).status_code == 200
    assert _upload(client, b"{}").status_code == 403


def test_the_upload_form_and_the_trace_page_link_to_each_other(
    viewer: Client, checkout: dict[str, trace.Span]
) -> None:
    form = viewer.get(UPLOAD)
    assert form.status_code == 200 and b'enctype="multipart/form-data"' in form.content
    page = viewer.get(reverse("traces:trace", args=[tid(checkout["root"])])).content.decode()
    assert f'href="{UPLOAD}"' in page
    assert f'href="{reverse("traces:download", args=[tid(checkout["root"])])}"' in page


@fuzzing(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_uploads_never_give_a_500(content: bytes) -> None:
    client = Client()
    user, _ = User.objects.get_or_create(username="fuzz")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    assert _upload(client, content).status_code in (200, 400, 413)


def test_a_large_resource_is_shown_once_not_once_per_span(viewer: Client) -> None:
    resource = [{"key": f"r{i}", "value": {"stringValue": "v" * 1_000}} for i in range(20)]
    spans = [
        {
            "traceId": "ab" * 16,
            "spanId": f"{i + 1:016x}",
            "name": f"s{i}",
            "startTimeUnixNano": "1767000000000000000",
            "endTimeUnixNano": "1767000000001000000",
        }
        for i in range(200)
    ]
    payload = {
        "resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}]
    }
    content = json.dumps(payload).encode()
    response = _upload(viewer, content)
    assert response.status_code == 200
    assert response.content.decode().count("v" * 1_000) == 20
    assert len(response.content) < 3 * len(content) + 200_000
