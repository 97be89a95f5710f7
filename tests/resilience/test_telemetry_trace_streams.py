"""``telemetry.trace`` on generators and async generators: one span per iteration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from resilience import telemetry


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry.configure(tracer_provider=provider)
    yield memory
    telemetry.configure()
    provider.shutdown()


def test_traced_generator_span_covers_the_whole_iteration(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("stream")
    def stream() -> Iterator[int]:
        with telemetry.tracer.span("chunk"):
            yield 1
        yield 2

    gen = stream()
    assert exporter.get_finished_spans() == ()  # created, not started
    assert next(gen) == 1
    # between steps the consumer's context is its own, not the stream's span
    assert not otel_trace.get_current_span().get_span_context().is_valid
    assert exporter.get_finished_spans() == ()
    assert list(gen) == [2]
    chunk, outer = exporter.get_finished_spans()
    assert (chunk.name, outer.name) == ("chunk", "stream")
    assert chunk.parent is not None and outer.context is not None
    assert chunk.parent.span_id == outer.context.span_id
    assert outer.status.status_code is StatusCode.UNSET


def test_traced_generator_error_is_recorded_and_close_is_not_an_error(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("failing")
    def failing() -> Iterator[int]:
        yield 1
        raise ConnectionError("dropped")

    @telemetry.trace("abandoned")
    def endless() -> Iterator[int]:
        while True:
            yield 1

    with pytest.raises(ConnectionError):
        list(failing())
    gen = endless()
    next(gen)
    gen.close()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["failing"].status.status_code is StatusCode.ERROR
    assert [event.name for event in spans["failing"].events] == ["exception"]
    assert spans["abandoned"].status.status_code is StatusCode.UNSET


async def test_traced_async_generator_spans_the_stream_and_records_errors(
    exporter: InMemorySpanExporter,
) -> None:
    @telemetry.trace("completion", attributes={"model": "m"})
    async def completion(fail: bool) -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(0)
        with telemetry.tracer.span("tokens"):
            yield "b"
        if fail:
            raise ConnectionError("provider hung up")

    assert [chunk async for chunk in completion(False)] == ["a", "b"]
    with pytest.raises(ConnectionError):
        async for _ in completion(True):
            pass
    tokens, ok, _tokens2, failed = exporter.get_finished_spans()
    assert ok.name == failed.name == "completion"
    assert ok.attributes == {"model": "m"}
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert tokens.parent is not None and ok.context is not None
    assert tokens.parent.span_id == ok.context.span_id


async def test_traced_async_callable_object_spans_the_await(
    exporter: InMemorySpanExporter,
) -> None:
    class Client:
        async def __call__(self) -> str:
            await asyncio.sleep(0)
            with telemetry.tracer.span("inner"):
                return "ok"

    traced = telemetry.trace("client")(Client())
    assert await traced() == "ok"
    inner, outer = exporter.get_finished_spans()
    assert outer.name == "client"
    assert inner.parent is not None and outer.context is not None
    assert inner.parent.span_id == outer.context.span_id
