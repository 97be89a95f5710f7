"""OTLP http/protobuf export, checked by a loopback receiver decoding the protobuf."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from dashboard.traces.tracing import otlp_processor


class _Collector(ThreadingHTTPServer):
    requests: list[tuple[str, ExportTraceServiceRequest]]


class _Handler(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append((self.path, request))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Collector]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = _Collector(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_spans_arrive_over_otlp_with_attributes_and_parent_links(collector: _Collector) -> None:
    port = collector.server_address[1]
    processor = otlp_processor(f"http://127.0.0.1:{port}/v1/traces")
    assert isinstance(processor, BatchSpanProcessor)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "exporter-test"}), shutdown_on_exit=False
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("otlp-test")
    with (
        tracer.start_as_current_span("parent", attributes={"order.id": 7}) as parent,
        tracer.start_as_current_span("child", attributes={"db.system": "sqlite"}) as child,
    ):
        pass
    assert processor.force_flush()
    processor.shutdown()

    assert collector.requests and {path for path, _ in collector.requests} == {"/v1/traces"}
    spans, services = {}, set()
    for _, request in collector.requests:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "otlp-test"
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert services == {"exporter-test"}
    assert set(spans) == {"parent", "child"}
    sent_parent, sent_child = spans["parent"], spans["child"]
    assert sent_parent.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
    assert sent_child.trace_id == sent_parent.trace_id
    assert sent_parent.span_id == parent.get_span_context().span_id.to_bytes(8, "big")
    assert sent_child.span_id == child.get_span_context().span_id.to_bytes(8, "big")
    assert sent_child.parent_span_id == sent_parent.span_id
    assert sent_parent.parent_span_id == b""
    attrs = {a.key: a.value for a in sent_parent.attributes}
    assert attrs["order.id"].int_value == 7
    assert {a.key: a.value.string_value for a in sent_child.attributes} == {"db.system": "sqlite"}


def test_the_endpoint_is_used_as_given(collector: _Collector) -> None:
    # settings.py builds it from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (test_settings_env.py).
    port = collector.server_address[1]
    processor = otlp_processor(f"http://127.0.0.1:{port}/custom/path")
    assert processor is not None
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    assert processor.force_flush()
    processor.shutdown()
    assert [path for path, _ in collector.requests] == ["/custom/path"]


def test_no_exporter_without_an_endpoint() -> None:
    assert otlp_processor("") is None
    assert otlp_processor("  ") is None
