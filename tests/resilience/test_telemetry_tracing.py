from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from resilience import telemetry
from resilience.errors import ConfigTypeError, ConfigValueError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry.configure(tracer_provider=provider)
    yield memory
    telemetry.configure()
    provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


# -- decorator ------------------------------------------------------------------------


def test_trace_sync_function_records_one_span_with_name_and_attributes(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("process_workflow", attributes={"priority": "high"})
    def work(x: int) -> int:
        return x * 2

    assert work(21) == 42
    (span,) = exporter.get_finished_spans()
    assert span.name == "process_workflow"
    assert span.attributes == {"priority": "high"}
    assert span.status.status_code is StatusCode.UNSET


def test_trace_default_name_is_module_and_qualname_and_keeps_metadata(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace
    def helper() -> None:
        """Doc."""

    @telemetry.trace()
    def other() -> None:
        pass

    helper()
    other()
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == [
        f"{__name__}.{helper.__qualname__}",
        f"{__name__}.{other.__qualname__}",
    ]
    assert helper.__name__ == "helper"
    assert helper.__doc__ == "Doc."


def test_trace_records_exception_sets_error_and_reraises(exporter: InMemorySpanExporter) -> None:
    class Boom(Exception):
        pass

    error = Boom("bad input")

    @telemetry.trace("fails")
    def fails() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is error
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Boom: bad input"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "bad input"
    assert str(event.attributes["exception.type"]).endswith("Boom")


def test_trace_does_not_mark_base_exceptions_as_errors(exporter: InMemorySpanExporter) -> None:
    class Stop(BaseException):
        pass

    @telemetry.trace("stops")
    def stops() -> None:
        raise Stop

    with pytest.raises(Stop):
        stops()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None


def test_trace_restores_the_current_span_after_the_call(exporter: InMemorySpanExporter) -> None:
    @telemetry.trace("inner")
    def inner() -> bool:
        return telemetry.current_span().is_recording()

    assert inner() is True
    assert telemetry.current_span().is_recording() is False


async def test_trace_async_function_spans_the_whole_await(exporter: InMemorySpanExporter) -> None:
    @telemetry.trace("async_work", attributes={"kind": "io"})
    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert inspect.iscoroutinefunction(work)
    assert await work() == "done"
    (span,) = exporter.get_finished_spans()
    assert span.name == "async_work"
    assert span.attributes == {"kind": "io"}


async def test_trace_async_nesting_follows_context_across_await(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("child")
    async def child(tag: str) -> str:
        await asyncio.sleep(0)
        telemetry.current_span().set_attribute("tag", tag)
        return tag

    @telemetry.trace("parent")
    async def parent(tag: str) -> str:
        telemetry.current_span().set_attribute("tag", tag)
        await asyncio.sleep(0)
        return await child(tag)

    assert list(await asyncio.gather(parent("a"), parent("b"))) == ["a", "b"]
    spans = exporter.get_finished_spans()
    parents = {s.attributes["tag"]: s for s in spans if s.name == "parent"}  # type: ignore[index]
    children = {s.attributes["tag"]: s for s in spans if s.name == "child"}  # type: ignore[index]
    for tag in ("a", "b"):
        assert parent_id(children[tag]) == span_id(parents[tag])
        assert parents[tag].parent is None
    assert trace_id(parents["a"]) != trace_id(parents["b"])


async def test_trace_async_exception_is_recorded_and_reraised(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("async_fails")
    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    with pytest.raises(KeyError):
        await fails()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_trace_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigTypeError):
        telemetry.trace("x")(42)  # type: ignore[type-var]
    with pytest.raises(ConfigValueError):
        telemetry.trace("")
    with pytest.raises(ConfigTypeError):
        telemetry.trace("x", attributes=["not", "a", "mapping"])  # type: ignore[call-overload]


# -- threads and executors ------------------------------------------------------------


def test_wrap_context_carries_the_parent_span_into_a_thread(exporter: InMemorySpanExporter) -> None:
    @telemetry.trace("in_thread")
    def work() -> None:
        pass

    with telemetry.tracer.span("request"):
        plain = threading.Thread(target=work)
        wrapped = threading.Thread(target=telemetry.wrap_context(work))
        plain.start()
        plain.join()
        wrapped.start()
        wrapped.join()

    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "request")
    in_threads = [s for s in spans if s.name == "in_thread"]
    assert [parent_id(s) for s in in_threads] == [None, span_id(request)]


def test_run_in_executor_propagates_parent_and_returns_the_result(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("pooled")
    def work(x: int, *, y: int) -> int:
        return x + y

    with ThreadPoolExecutor(max_workers=2) as pool, telemetry.tracer.span("request"):
        futures = [telemetry.run_in_executor(pool, work, i, y=1) for i in range(4)]
        assert [f.result() for f in futures] == [1, 2, 3, 4]

    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "request")
    pooled = [s for s in spans if s.name == "pooled"]
    assert len(pooled) == 4
    assert {parent_id(s) for s in pooled} == {span_id(request)}


def test_wrap_context_can_run_concurrently_and_repeatedly(exporter: InMemorySpanExporter) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def record() -> None:
        with lock:
            seen.append(telemetry.current_span().span_id)

    with telemetry.tracer.span("parent") as parent:
        wrapped = telemetry.wrap_context(record)
    threads = [threading.Thread(target=wrapped) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wrapped()
    assert seen == [parent.span_id] * 5


# -- manual spans ---------------------------------------------------------------------


def test_start_span_makes_it_current_and_end_span_restores_context(
    exporter: InMemorySpanExporter,
) -> None:
    outer = telemetry.tracer.start_span("agent_execution", attributes={"agent_id": "123"})
    assert telemetry.current_span().span_id == outer.span_id
    inner = telemetry.tracer.start_span("step")
    assert telemetry.current_span().span_id == inner.span_id
    telemetry.tracer.end_span(inner)
    assert telemetry.current_span().span_id == outer.span_id
    outer.set_status("OK")
    telemetry.tracer.end_span(outer)
    assert not telemetry.current_span().is_recording()

    spans = finished(exporter)
    assert parent_id(spans["step"]) == span_id(spans["agent_execution"])
    assert spans["agent_execution"].attributes == {"agent_id": "123"}
    assert spans["agent_execution"].status.status_code is StatusCode.OK


def test_end_span_twice_exports_once(exporter: InMemorySpanExporter) -> None:
    span = telemetry.tracer.start_span("once")
    telemetry.tracer.end_span(span)
    telemetry.tracer.end_span(span)
    assert span.ended
    assert len(exporter.get_finished_spans()) == 1


def test_start_span_not_current_leaves_context_alone(exporter: InMemorySpanExporter) -> None:
    detached = telemetry.tracer.start_span("detached", current=False)
    assert not telemetry.current_span().is_recording()
    with telemetry.tracer.span("sibling"):
        pass
    telemetry.tracer.end_span(detached)
    spans = finished(exporter)
    assert spans["sibling"].parent is None


def test_end_span_accepts_a_raw_otel_span(exporter: InMemorySpanExporter) -> None:
    raw = telemetry.provider().get_tracer("test").start_span("raw")
    telemetry.tracer.end_span(raw)
    assert [s.name for s in exporter.get_finished_spans()] == ["raw"]


def test_span_context_manager_nests_and_records_errors(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError, match="broken"), telemetry.tracer.span("outer") as outer:
        outer.add_event("loaded", {"rows": 3})
        with telemetry.tracer.span("inner", attributes={"step": 1}) as inner:
            inner.set_attribute("extra", True)
        raise RuntimeError("broken")

    spans = finished(exporter)
    assert parent_id(spans["inner"]) == span_id(spans["outer"])
    assert spans["inner"].attributes == {"step": 1, "extra": True}
    assert spans["inner"].status.status_code is StatusCode.UNSET
    assert spans["outer"].status.status_code is StatusCode.ERROR
    assert [event.name for event in spans["outer"].events] == ["loaded", "exception"]
    assert not telemetry.current_span().is_recording()


@pytest.mark.parametrize(
    ("status", "description", "code", "kept"),
    [
        ("OK", None, StatusCode.OK, None),
        ("ok", "ignored for OK", StatusCode.OK, None),
        ("ERROR", "db down", StatusCode.ERROR, "db down"),
        ("error", None, StatusCode.ERROR, None),
        (StatusCode.ERROR, "code", StatusCode.ERROR, "code"),
        (Status(StatusCode.ERROR, "obj"), None, StatusCode.ERROR, "obj"),
        (Status(StatusCode.OK), None, StatusCode.OK, None),
    ],
)
def test_set_status_accepts_strings_codes_and_status_objects(
    exporter: InMemorySpanExporter,
    status: str | StatusCode | Status,
    description: str | None,
    code: StatusCode,
    kept: str | None,
) -> None:
    with telemetry.tracer.span("s") as span:
        span.set_status(status, description)
    (done,) = exporter.get_finished_spans()
    assert done.status.status_code is code
    assert done.status.description == kept


def test_set_status_rejects_unknown_values(exporter: InMemorySpanExporter) -> None:
    with telemetry.tracer.span("s") as span:
        with pytest.raises(ValueError, match="'FINE'"):
            span.set_status("FINE")
        with pytest.raises(TypeError):
            span.set_status(1)  # type: ignore[arg-type]


# -- propagation ----------------------------------------------------------------------


def test_inject_extract_round_trip_continues_the_trace(exporter: InMemorySpanExporter) -> None:
    with telemetry.tracer.span("client") as client:
        headers = telemetry.inject({})
    assert headers["traceparent"].startswith(f"00-{client.trace_id}-{client.span_id}-")

    incoming = {"Traceparent": headers["traceparent"]}  # header case must not matter
    server = telemetry.tracer.start_span("server", context=telemetry.extract(incoming))
    telemetry.tracer.end_span(server)
    assert server.trace_id == client.trace_id
    spans = finished(exporter)
    assert parent_id(spans["server"]) == span_id(spans["client"])


def test_extract_without_valid_traceparent_starts_a_new_trace(
    exporter: InMemorySpanExporter,
) -> None:
    ctx = telemetry.extract({"traceparent": "garbage"})
    with telemetry.tracer.span("server", context=ctx):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


# -- providers ------------------------------------------------------------------------


def test_add_span_processor_attaches_to_the_provider_in_use(exporter: InMemorySpanExporter) -> None:
    extra = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(extra))
    with telemetry.tracer.span("both"):
        pass
    assert [s.name for s in extra.get_finished_spans()] == ["both"]
    assert [s.name for s in exporter.get_finished_spans()] == ["both"]


def test_add_span_processor_needs_an_sdk_provider() -> None:
    telemetry.configure(tracer_provider=otel_trace.NoOpTracerProvider())
    try:
        with pytest.raises(ConfigTypeError):
            telemetry.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    finally:
        telemetry.configure()


def test_configure_rejects_service_name_with_a_given_provider() -> None:
    with pytest.raises(ConfigValueError):
        telemetry.configure(tracer_provider=TracerProvider(), service_name="x")


def test_build_provider_service_name_from_argument_env_or_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert telemetry.build_provider().resource.attributes["service.name"] == "resilience"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orchestrator")
    assert telemetry.build_provider().resource.attributes["service.name"] == "orchestrator"
    named = telemetry.build_provider(service_name="explicit")
    assert named.resource.attributes["service.name"] == "explicit"


def _run(script: str, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environment.pop("OTEL_RESOURCE_ATTRIBUTES", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_first_span_installs_a_global_sdk_provider_shared_with_other_instrumentation() -> None:
    out = _run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from resilience import telemetry

        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        memory = InMemorySpanExporter()
        telemetry.add_span_processor(SimpleSpanProcessor(memory))
        installed = trace.get_tracer_provider()
        assert isinstance(installed, TracerProvider) and telemetry.provider() is installed

        @telemetry.trace("ours")
        def ours():
            pass

        # As Django's auto-instrumentation would: a plain OTel tracer from the global.
        with trace.get_tracer("django").start_as_current_span("GET /"):
            ours()
        spans = {s.name: s for s in memory.get_finished_spans()}
        assert spans["ours"].parent.span_id == spans["GET /"].context.span_id
        print(installed.resource.attributes["service.name"])
        """,
        OTEL_SERVICE_NAME="svc-from-env",
    )
    assert out == "svc-from-env"


def test_an_existing_global_provider_is_used_not_replaced() -> None:
    out = _run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from resilience import telemetry

        mine = TracerProvider(resource=Resource.create({"service.name": "app"}))
        trace.set_tracer_provider(mine)
        with telemetry.tracer.span("x") as span:
            assert span.is_recording()
        assert telemetry.provider() is mine and trace.get_tracer_provider() is mine
        assert telemetry.configure(service_name="app") is mine
        try:
            telemetry.configure(service_name="other")
        except ValueError as exc:
            print("conflict:", "'app'" in str(exc))
        """
    )
    assert out == "conflict: True"
