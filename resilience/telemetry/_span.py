"""The span handle returned by :mod:`resilience.telemetry`: a thin wrapper of an OTel span.

The wrapper exists for two reasons: the seed API sets statuses with strings
(``span.set_status("OK")``), which OpenTelemetry spans do not accept, and a span made
current by ``start_span`` must remember the context token that ``end_span`` restores.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import TypeAlias

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = ["Span", "StatusLike", "error_status", "parse_status"]

StatusLike: TypeAlias = str | StatusCode | Status

_STATUS_NAMES = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR, "UNSET": StatusCode.UNSET}


def parse_status(status: StatusLike, description: str | None = None) -> Status:
    """Turn ``"OK"`` / ``"ERROR"`` / ``"UNSET"`` (any case), a StatusCode or a Status into a Status.

    A description is kept only for ERROR: OpenTelemetry ignores (and logs about) a
    description on any other status.

    Raises:
        ValueError: ``status`` is an unknown string.
        TypeError: ``status`` is neither a string, a StatusCode nor a Status.
    """
    if isinstance(status, Status):
        if description is None or status.status_code is not StatusCode.ERROR:
            return status
        return Status(StatusCode.ERROR, description)
    if isinstance(status, str):
        code = _STATUS_NAMES.get(status.upper())
        if code is None:
            raise ValueError(f"status must be one of 'OK', 'ERROR', 'UNSET', got {status!r}")
    elif isinstance(status, StatusCode):
        code = status
    else:
        raise TypeError(f"status must be a str, StatusCode or Status, got {status!r}")
    return Status(code, description if code is StatusCode.ERROR else None)


def error_status(exc: BaseException) -> Status:
    """The ERROR status recorded for an exception (same text as OpenTelemetry's own)."""
    return Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")


class Span:
    """A started span. Use it as a context manager or end it with ``tracer.end_span``.

    Wraps an OpenTelemetry span (``otel_span``); every exporter and span processor
    sees the real OTel span. Ending is idempotent.
    """

    __slots__ = ("_ended", "_span", "_token")

    def __init__(self, otel_span: otel_trace.Span, token: Token[Context] | None = None) -> None:
        self._span = otel_span
        self._token = token
        self._ended = False

    def __repr__(self) -> str:
        ctx = self._span.get_span_context()
        return (
            f"<Span trace_id={ctx.trace_id:032x} span_id={ctx.span_id:016x}"
            f"{' ended' if self._ended else ''}>"
        )

    @property
    def otel_span(self) -> otel_trace.Span:
        """The underlying OpenTelemetry span."""
        return self._span

    @property
    def span_context(self) -> otel_trace.SpanContext:
        """The span's immutable context (trace id, span id, flags)."""
        return self._span.get_span_context()

    @property
    def trace_id(self) -> str:
        """The trace id as 32 lowercase hex digits (as in W3C traceparent)."""
        return otel_trace.format_trace_id(self._span.get_span_context().trace_id)

    @property
    def span_id(self) -> str:
        """The span id as 16 lowercase hex digits."""
        return otel_trace.format_span_id(self._span.get_span_context().span_id)

    @property
    def ended(self) -> bool:
        """True once :meth:`end` ran."""
        return self._ended

    def is_recording(self) -> bool:
        """False for a sampled-out span or one that has ended."""
        return self._span.is_recording()

    def set_status(self, status: StatusLike, description: str | None = None) -> None:
        """Set the span status.

        Args:
            status: ``"OK"``, ``"ERROR"`` or ``"UNSET"`` (any case), or an OTel
                ``StatusCode`` / ``Status``. As in OpenTelemetry, once OK it stays OK.
            description: kept for ERROR only.

        Raises:
            ValueError: unknown status string.
            TypeError: unsupported status type.
        """
        self._span.set_status(parse_status(status, description))

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (str, bool, int, float or a homogeneous sequence of them)."""
        self._span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes at once."""
        self._span.set_attributes(attributes)

    def add_event(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Add a timestamped event (``timestamp`` in ns since the epoch; default now)."""
        self._span.add_event(name, attributes, timestamp)

    def record_exception(
        self, exception: BaseException, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None:
        """Record ``exception`` as an ``exception`` event (type, message, stack trace)."""
        self._span.record_exception(exception, attributes)

    def update_name(self, name: str) -> None:
        """Rename the span before it ends."""
        self._span.update_name(name)

    def end(self, end_time: int | None = None) -> None:
        """End the span and, if it was made current, restore the previous context.

        Spans made current must end in the reverse order they started, in the same
        thread or task (like nested ``with`` blocks). A second call does nothing.
        """
        if self._ended:
            return
        self._ended = True
        token, self._token = self._token, None
        try:
            self._span.end(end_time)
        finally:
            if token is not None:
                otel_context.detach(token)

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Only Exception is an error: GeneratorExit, CancelledError and KeyboardInterrupt
        # end the span without marking it failed (OpenTelemetry's use_span does the same).
        if isinstance(exc, Exception) and self._span.is_recording():
            self._span.record_exception(exc)
            self._span.set_status(error_status(exc))
        self.end()
