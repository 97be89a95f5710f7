"""Tracing: the ``trace`` decorator, the ``tracer`` facade, context and W3C helpers."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from resilience._kinds import CallableKind, callable_kind
from resilience.errors import ConfigTypeError, ConfigValueError
from resilience.telemetry._provider import otel_tracer, state
from resilience.telemetry._span import Span
from resilience.telemetry._trace_streams import fail as _fail
from resilience.telemetry._trace_streams import trace_async_generator, trace_generator

__all__ = [
    "Tracer",
    "current_span",
    "extract",
    "inject",
    "run_in_executor",
    "trace",
    "tracer",
    "wrap_context",
]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

Attributes = Mapping[str, AttributeValue]

_attach = otel_context.attach
_detach = otel_context.detach
_in_context = otel_trace.set_span_in_context


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise ConfigTypeError(f"span name must be a str, got {name!r}")
    if not name:
        raise ConfigValueError("span name must not be empty")
    return name


def _check_attributes(attributes: object) -> dict[str, AttributeValue] | None:
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping):
        raise ConfigTypeError(f"attributes must be a mapping, got {attributes!r}")
    for key in attributes:
        if not isinstance(key, str) or not key:
            raise ConfigValueError(f"attribute keys must be non-empty str, got {key!r}")
    return dict(attributes) or None


class _SpanScope:
    """``with tracer.span(...) as span``: starts on enter, ends (and records errors) on exit."""

    __slots__ = ("_args", "_span")

    def __init__(
        self,
        name: str,
        attributes: dict[str, AttributeValue] | None,
        context: Context | None,
        kind: SpanKind,
    ) -> None:
        self._args = (name, attributes, context, kind)
        self._span: Span | None = None

    def __enter__(self) -> Span:
        if self._span is not None:
            raise RuntimeError("a tracer.span(...) block cannot be entered twice")
        name, attributes, context, kind = self._args
        self._span = _start(name, attributes, context, kind, current=True)
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._span is not None:
            self._span.__exit__(exc_type, exc, tb)


def _start(
    name: str,
    attributes: dict[str, AttributeValue] | None,
    context: Context | None,
    kind: SpanKind,
    *,
    current: bool,
) -> Span:
    otel = (state.otel_tracer or otel_tracer()).start_span(
        name, context=context, kind=kind, attributes=attributes
    )
    return Span(otel, _attach(_in_context(otel)) if current else None)


class Tracer:
    """Manual spans, as in the seed: ``start_span`` / ``end_span`` or ``with span(...)``.

    Spans are real OpenTelemetry spans from :func:`resilience.telemetry.provider`.
    """

    __slots__ = ()

    def start_span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        current: bool = True,
    ) -> Span:
        """Start a span; with ``current`` (default) it becomes the current span.

        Spans started while it is current become its children, until
        :meth:`end_span` restores the previous context. Spans made current must end
        in reverse order, in the thread or task that started them.

        Args:
            name: the span name.
            attributes: initial attributes.
            context: parent context (e.g. from :func:`extract`); default: the current one.
            kind: the OTel SpanKind.
            current: False starts a detached span that may end anywhere.

        Returns:
            The started :class:`Span`.

        Raises:
            ConfigTypeError / ConfigValueError: bad name or attributes.
        """
        return _start(
            _check_name(name), _check_attributes(attributes), context, kind, current=current
        )

    def end_span(self, span: Span | otel_trace.Span, end_time: int | None = None) -> None:
        """End ``span`` and restore the context that was current when it started.

        Accepts a :class:`Span` or a raw OTel span. Ending twice does nothing.
        """
        if isinstance(span, Span) or span.is_recording():
            span.end(end_time)

    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> _SpanScope:
        """Context manager form: ``with tracer.span("load", attributes={...}) as span:``.

        The span is current inside the block; an exception escaping the block is
        recorded, sets status ERROR and propagates.
        """
        return _SpanScope(_check_name(name), _check_attributes(attributes), context, kind)

    def current_span(self) -> Span:
        """The current span (a non-recording placeholder when there is none)."""
        return current_span()


tracer = Tracer()


def current_span() -> Span:
    """The current span, wrapped (non-recording, invalid ids when there is none)."""
    return Span(otel_trace.get_current_span())


@overload
def trace(name: F, attributes: None = None, *, kind: SpanKind = ...) -> F: ...
@overload
def trace(
    name: str | None = None, attributes: Attributes | None = None, *, kind: SpanKind = ...
) -> Callable[[F], F]: ...
def trace(
    name: str | Callable[..., Any] | None = None,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Any:
    """Decorate a function so each call runs in its own current span.

    ``@trace``, ``@trace()`` and ``@trace("name", attributes={...})`` all work. An
    exception (``Exception`` subclasses) is recorded on the span, the status set to
    ERROR, and re-raised; success leaves the status UNSET, as OpenTelemetry asks of
    instrumentation. Coroutine functions (and objects with ``async def __call__``)
    get an async wrapper, so the span covers the whole ``await`` and spans started
    inside (across awaits) are its children. Generator and async generator functions
    get one span per iteration, from the first ``next``/``anext`` to exhaustion,
    error or close (see :mod:`resilience.telemetry._trace_streams`).

    Args:
        name: the span name; default ``module.qualname`` of the function.
        attributes: attributes set on every span.
        kind: the OTel SpanKind.

    Returns:
        The decorator (or the wrapped function for bare ``@trace``).

    Raises:
        ConfigTypeError: bad name/attributes, or ``fn`` is not callable.
    """
    if callable(name):
        return _decorate(name, None, None, kind)
    span_name = None if name is None else _check_name(name)
    attrs = _check_attributes(attributes)

    def decorator(fn: F) -> F:
        return _decorate(fn, span_name, attrs, kind)

    return decorator


def _decorate(
    fn: F, name: str | None, attrs: dict[str, AttributeValue] | None, kind: SpanKind
) -> F:
    if not callable(fn):
        raise ConfigTypeError(f"trace decorates callables, got {fn!r}")
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    span_name = name or f"{fn.__module__}.{qualname}"
    kind_of = callable_kind(fn)
    if kind_of is CallableKind.GENERATOR:
        return cast(F, functools.wraps(fn)(trace_generator(fn, span_name, attrs, kind)))
    if kind_of is CallableKind.ASYNC_GENERATOR:
        return cast(F, functools.wraps(fn)(trace_async_generator(fn, span_name, attrs, kind)))
    if kind_of is CallableKind.ASYNC:
        afn = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def async_traced(*args: Any, **kwargs: Any) -> Any:
            span = (state.otel_tracer or otel_tracer()).start_span(
                span_name, kind=kind, attributes=attrs
            )
            token = _attach(_in_context(span))
            try:
                return await afn(*args, **kwargs)
            except Exception as exc:
                _fail(span, exc)
                raise
            finally:
                _detach(token)
                span.end()

        return cast(F, async_traced)

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        span = (state.otel_tracer or otel_tracer()).start_span(
            span_name, kind=kind, attributes=attrs
        )
        token = _attach(_in_context(span))
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _fail(span, exc)
            raise
        finally:
            _detach(token)
            span.end()

    return cast(F, traced)


def wrap_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to the context current NOW, for running it in another thread.

    Threads and ``Executor.submit`` start from an empty context, so spans there would
    start new traces. ``Thread(target=wrap_context(work))`` keeps the current span as
    their parent. Each call runs in its own copy, so the wrapper may run many times,
    concurrently. (``asyncio.to_thread`` and asyncio tasks already copy the context.)

    Returns:
        A callable with the same signature.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return in_context


def run_in_executor(
    executor: Executor, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> Future[R]:
    """``executor.submit(fn, ...)`` with the current context (and span) carried over.

    From asyncio: ``await asyncio.wrap_future(run_in_executor(pool, fn, x))``.

    Returns:
        The executor's future.
    """
    return executor.submit(wrap_context(fn), *args, **kwargs)


def inject(
    headers: MutableMapping[str, str], context: Context | None = None
) -> MutableMapping[str, str]:
    """Write the W3C ``traceparent`` (and ``tracestate``/``baggage``) of the current span.

    Uses the globally configured propagator (W3C trace context + baggage by default).

    Args:
        headers: the outgoing headers, updated in place.
        context: inject this context instead of the current one.

    Returns:
        ``headers``.
    """
    propagate.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | Mapping[str, list[str]]) -> Context:
    """Read the remote parent from incoming headers (names match case-insensitively).

    Pass the result as ``context=`` to :meth:`Tracer.start_span` or attach it.

    Returns:
        A Context; without a valid ``traceparent`` it carries no parent span.
    """
    lowered = {str(key).lower(): value for key, value in headers.items()}
    return propagate.extract(lowered)
