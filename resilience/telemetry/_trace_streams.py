"""``trace`` for generator and async generator functions: one span per iteration.

The span starts at the first ``next``/``anext`` (creating a generator runs none of
its body) and ends when the stream is exhausted, raises, or is closed. It covers the
whole iteration, consumer pauses included, as a streamed response's span should.
The span is made current only while the generator's own code runs (each step), not
while the consumer holds an item: a span current across ``yield`` would leak into
the consumer's context, and its token could not be detached if the consumer moved
to another task or thread. Spans started inside the body are its children.
An exception escaping the stream is recorded (status ERROR); closing it early is
not an error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from resilience.telemetry._provider import otel_tracer, state
from resilience.telemetry._span import error_status

__all__ = ["fail", "trace_async_generator", "trace_generator"]

_attach = otel_context.attach
_detach = otel_context.detach
_in_context = otel_trace.set_span_in_context


def fail(span: otel_trace.Span, exc: Exception) -> None:
    """Record ``exc`` on ``span`` and set its status to ERROR."""
    if span.is_recording():
        span.record_exception(exc, escaped=True)
        span.set_status(error_status(exc))


def trace_generator(
    fn: Callable[..., Generator[Any, Any, Any]],
    name: str,
    attrs: dict[str, AttributeValue] | None,
    kind: SpanKind,
) -> Callable[..., Generator[Any, Any, Any]]:
    """A generator function running ``fn``'s generator inside one span."""

    def traced(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        span = (state.otel_tracer or otel_tracer()).start_span(name, kind=kind, attributes=attrs)
        current = _in_context(span)
        gen = fn(*args, **kwargs)
        step: Callable[[Any], Any] = gen.send
        value: Any = None
        try:
            while True:
                token = _attach(current)
                try:
                    item = step(value)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _detach(token)
                try:
                    value = yield item
                    step = gen.send
                except GeneratorExit:
                    token = _attach(current)
                    try:
                        gen.close()
                    finally:
                        _detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    step, value = gen.throw, exc
        except Exception as exc:
            fail(span, exc)
            raise
        finally:
            span.end()

    return traced


def trace_async_generator(
    fn: Callable[..., AsyncGenerator[Any, Any]],
    name: str,
    attrs: dict[str, AttributeValue] | None,
    kind: SpanKind,
) -> Callable[..., AsyncGenerator[Any, Any]]:
    """An async generator function running ``fn``'s stream inside one span."""

    async def traced(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        span = (state.otel_tracer or otel_tracer()).start_span(name, kind=kind, attributes=attrs)
        current = _in_context(span)
        agen = fn(*args, **kwargs)
        step: Callable[[Any], Any] = agen.asend
        value: Any = None
        try:
            while True:
                token = _attach(current)
                try:
                    item = await step(value)
                except StopAsyncIteration:
                    return
                finally:
                    _detach(token)
                try:
                    value = yield item
                    step = agen.asend
                except GeneratorExit:
                    token = _attach(current)
                    try:
                        await agen.aclose()
                    finally:
                        _detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    step, value = agen.athrow, exc
        except Exception as exc:
            fail(span, exc)
            raise
        finally:
            span.end()

    return traced
