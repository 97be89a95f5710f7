"""The installation in TracesConfig.ready(): global provider, Django instrumentation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from dashboard.traces import tracing
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.processor import DatabaseSpanProcessor

ROOT = Path(__file__).resolve().parents[3]
# The instrumentation's middleware, with unsampled API reads skipped (request_sampling).
OTEL_MIDDLEWARE = "dashboard.traces.request_sampling.ApiReadMiddleware"


def traced_view(request: HttpRequest) -> HttpResponse:
    with trace.get_tracer("test.view").start_as_current_span("inside view", attributes={"n": 1}):
        return HttpResponse("ok")


def failing_view(request: HttpRequest) -> HttpResponse:
    raise ValueError("kaboom")


urlpatterns = [path("traced/", traced_view), path("failing/", failing_view)]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def installed() -> Iterator[DatabaseSpanProcessor]:
    processor = tracing.processor()
    assert processor is not None, "the test runtime should have installed the processor"
    processor.enabled = True
    assert processor.force_flush()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    yield processor
    assert processor.force_flush()


@pytest.mark.urls(__name__)
def test_a_request_becomes_the_parent_of_spans_made_in_the_view(
    client: Client, installed: DatabaseSpanProcessor
) -> None:
    assert client.get("/traced/").content == b"ok"
    assert installed.force_flush()
    server = SpanRecord.objects.get(kind="SERVER")
    inner = SpanRecord.objects.get(name="inside view")
    assert server.name == "GET traced/"
    assert inner.trace_id == server.trace_id and inner.parent_span_id == server.span_id
    assert server.parent_span_id is None
    assert "GET" in (
        server.attributes.get("http.method"),
        server.attributes.get("http.request.method"),
    )
    assert server.service == trace.get_tracer_provider().resource.attributes["service.name"]
    summary = TraceSummary.objects.get()
    assert (summary.root_name, summary.span_count) == ("GET traced/", 2)


@pytest.mark.urls(__name__)
def test_a_failing_request_is_stored_as_an_error_with_its_exception(
    installed: DatabaseSpanProcessor,
) -> None:
    response = Client(raise_request_exception=False).get("/failing/")
    assert response.status_code == 500
    assert installed.force_flush()
    server = SpanRecord.objects.get(kind="SERVER")
    assert server.status == "ERROR"
    exception = next(e for e in server.events if e["name"] == "exception")
    assert exception["attributes"]["exception.message"] == "kaboom"
    assert "failing_view" in exception["attributes"]["exception.stacktrace"]


def test_asgi_requests_are_traced_too(installed: DatabaseSpanProcessor) -> None:
    from dashboard.asgi import application

    communicator = HttpCommunicator(
        application, "GET", "/accounts/login/", headers=[(b"host", b"localhost")]
    )
    assert async_to_sync(communicator.get_response)()["status"] == 200
    assert installed.force_flush()
    assert SpanRecord.objects.filter(kind="SERVER", name="GET accounts/login/").exists()


def test_static_files_are_not_traced(client: Client, installed: DatabaseSpanProcessor) -> None:
    client.get("/static/dashboard/dashboard.css").close()  # served or 404: not traced
    assert client.get("/accounts/login/").status_code == 200
    assert installed.force_flush()
    assert list(SpanRecord.objects.values_list("name", flat=True)) == ["GET accounts/login/"]


def test_install_is_idempotent(installed: DatabaseSpanProcessor) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert tracing.install() is installed
    assert tracing.global_sdk_provider() is provider
    assert list(settings.MIDDLEWARE).count(OTEL_MIDDLEWARE) == 1


_PROBE = """
import threading, django
django.setup()
from dashboard import runtime
runtime.start(runtime.Features.from_settings(serving=False))  # the server's start
from django.conf import settings
from django.db import connection
from opentelemetry import trace
otel = [m for m in settings.MIDDLEWARE if "otel" in m.lower() or "ApiRead" in m]
threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("traces"))
provider = trace.get_tracer_provider()
name = getattr(provider, "resource", None) and provider.resource.attributes["service.name"]
print(type(provider).__name__, len(otel), connection.connection is None, threads, name)
"""


def _probe(tmp_path: Path, **env: str) -> str:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACES_", "DATABASE"))
    }
    environ.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        SECRET_KEY="x" * 50,
        DATABASE_URL=f"sqlite:///{tmp_path / 'probe.sqlite3'}",
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_setup_installs_without_threads_or_connections_and_can_be_disabled(
    tmp_path: Path,
) -> None:
    enabled = _probe(tmp_path, OTEL_SERVICE_NAME="orders-dashboard")
    assert enabled == "TracerProvider 1 True [] orders-dashboard"
    assert _probe(tmp_path) == "TracerProvider 1 True [] resilience-dashboard"
    disabled = _probe(tmp_path, TRACES_ENABLED="0")
    assert disabled.startswith("ProxyTracerProvider 0 True []")
