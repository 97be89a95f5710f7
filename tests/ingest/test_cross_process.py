"""One trace across two real processes: the dashboard (daphne) and a worker that uses
only the OpenTelemetry SDK and its OTLP/HTTP exporter, plus the README's curl example.

OTLP exporters log and return on HTTP errors (a sender exits 0 after a 404), so every
assertion here reads what the server stored: the database and the traces API.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from daphne.testing import DaphneProcess

from dashboard.api import testing
from dashboard.traces.models import SpanRecord

T = TypeVar("T")
WORKER = textwrap.dedent(
    """
    import sys

    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # Endpoint, headers and service name come from the standard OTEL_* variables.
    provider = TracerProvider(resource=Resource.create({"service.instance.id": "worker-1"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("billing")
    parent = TraceContextTextMapPropagator().extract({"traceparent": sys.argv[1]})
    with tracer.start_as_current_span(
        "charge", context=parent, kind=trace.SpanKind.CONSUMER, attributes={"card.token": "t0k"}
    ):
        with tracer.start_as_current_span("ledger.write"):
            pass
    provider.shutdown()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("dashboard", "resilience"))
    assert not leaked, f"project code imported: {leaked}"
    """
)


def wait_for(read: Callable[[], T], timeout: float = 20.0) -> T:
    """Poll ``read`` until it returns something truthy (waiting, not a time limit on behaviour)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


class _Server(DaphneProcess):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("127.0.0.1", _application, setup=_setup)

    def run(self) -> None:
        # A forked child inherits asgiref's executor without its thread (asgiref#194).
        from concurrent.futures import ThreadPoolExecutor

        from asgiref.sync import AsyncToSync, SyncToAsync

        SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
        AsyncToSync.loop_thread_executors.clear()
        super().run()


def _setup() -> None:
    from channels.testing.live import set_database_connection

    set_database_connection()


def _application() -> Any:
    from dashboard.asgi import application

    return application


@pytest.fixture
def server(transactional_db: None, django_db_blocker: Any) -> Iterator[str]:
    from django.db import connections

    with django_db_blocker.unblock():
        connections.close_all()  # the child must not share the parent's sqlite handles
        process = _Server()
        process.start()
    try:
        if not process.ready.wait(timeout=15):
            raise RuntimeError("daphne did not start")
        yield f"http://127.0.0.1:{process.port.value}"
    finally:
        process.terminate()
        process.join(5)


def _spans(trace_id: str, service: str, count: int) -> Callable[[], list[SpanRecord]]:
    def read() -> list[SpanRecord]:
        rows = list(SpanRecord.objects.filter(trace_id=trace_id, service=service))
        return rows if len(rows) >= count else []

    return read


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return response.status, json.loads(response.read())


def test_a_trace_started_in_the_dashboard_continues_in_an_sdk_only_process(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    reader = testing.bearer(
        testing.token_for(testing.make_user("vera", "dashboard.view_dashboard"))
    )
    headers = {"Authorization": reader["HTTP_AUTHORIZATION"]}
    ingest_token = testing.token_for(testing.make_user("billing", "traces.ingest_spans"))

    # 1. A request into the dashboard, joining a trace started upstream (W3C traceparent).
    trace_id, upstream = secrets.token_hex(16), secrets.token_hex(8)
    status, _ = _get(
        f"{server}/api/observability/circuit-breakers",
        {**headers, "traceparent": f"00-{trace_id}-{upstream}-01"},
    )
    assert status == 200
    (dashboard_span,) = wait_for(_spans(trace_id, "resilience-dashboard", 1))
    assert dashboard_span.parent_span_id == upstream

    # 2. The work continues in another process, carrying the dashboard span's context.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NO_PROXY": "127.0.0.1,localhost",
        "OTEL_SERVICE_NAME": "billing-worker",
        "OTEL_EXPORTER_OTLP_ENDPOINT": server,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{ingest_token}",
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", WORKER, f"00-{trace_id}-{dashboard_span.span_id}-01"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    # 3. Server side: both services in one trace, the worker's spans under the dashboard's.
    worker = {row.name: row for row in wait_for(_spans(trace_id, "billing-worker", 2))}
    assert worker["charge"].parent_span_id == dashboard_span.span_id
    assert worker["charge"].kind == "CONSUMER"
    assert worker["ledger.write"].parent_span_id == worker["charge"].span_id
    assert worker["charge"].attributes["card.token"] == "***"  # the same masking
    assert worker["charge"].resource["service.instance.id"] == "worker-1"
    assert worker["charge"].resource["telemetry.sdk.language"] == "python"

    status, detail = _get(f"{server}/api/observability/traces/{trace_id}", headers)
    assert status == 200
    assert set(detail["services"]) == {"resilience-dashboard", "billing-worker"}
    depth = {span["name"]: span["depth"] for span in detail["spans"]}
    top = depth[dashboard_span.name]
    assert (depth["charge"], depth["ledger.write"]) == (top + 1, top + 2)


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_curl_example() -> str:
    """The ```sh block of the README's "Sending spans from your services" section."""
    section = README.read_text().split("## Sending spans from your services", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    assert match is not None, "the README lost its curl example"
    return match.group(1)


def test_the_readme_curl_example_stores_a_json_span(server: str, tmp_path: Path) -> None:
    for tool in ("bash", "curl"):
        if shutil.which(tool) is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{tool} is missing and CI=true: the README's example must run")
            pytest.skip(f"{tool} is not installed (make system-deps installs curl)")
    token = testing.token_for(testing.make_user("script", "traces.ingest_spans"))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NO_PROXY": "127.0.0.1,localhost",
        "TOKEN": token,
        "DASHBOARD": server,
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _readme_curl_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "{}"), done.stderr
    trace_id = "5b8efff798038103d269b633813fc60c"
    (row,) = wait_for(_spans(trace_id, "my-script", 1))
    assert (row.name, row.attributes) == ("nightly-import", {"rows": 1200})
    assert row.duration_us == 1_500_000
