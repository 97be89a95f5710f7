"""Which requests' server spans are recorded: API reads are sampled.

A dashboard is polled: Grafana, scripts and health checkers read the REST API many
times a second, and a server span per read (recorded, converted, masked, stored) cost
about as much CPU as the read itself (``make bench BENCH=http``), while filling the span
store (``TRACES_MAX_ROWS``) with identical, uninteresting traces.

So the Django instrumentation's tracer gets :class:`ApiReadSampler` in front of the
provider's sampler (``OTEL_TRACES_SAMPLER``, by default parent-based always-on):

- a GET or HEAD under ``/api/`` that starts a trace (no parent in its ``traceparent``)
  is recorded with probability ``TRACES_API_READ_RATIO`` (default 0.01; 1 records every
  one, 0 none), decided on the trace id as ``TraceIdRatioBased`` does, and only if the
  provider's sampler would record it too;
- everything else is the provider's sampler's decision: pages, mutations (POST, PUT,
  PATCH, DELETE: the audited ones), OTLP ingest, and API reads that continue a trace
  (a caller that sends a sampled ``traceparent`` gets its read traced).

The sampler alone still left the instrumentation's middleware running for every dropped
read (its attributes, a second URL resolve for the span name, three excluded-URL checks,
the metric instruments: 0.2-0.25 ms). :class:`ApiReadMiddleware`, which
:func:`dashboard.traces.tracing.instrument_django` puts in ``MIDDLEWARE`` instead of the
instrumentation's own (it is that middleware, with one check in front), draws first: an
API read with no trace context in its headers (none of the global propagator's fields:
``traceparent``, ``tracestate``, ``baggage`` by default) that is not drawn at the ratio
goes straight to the rest of the chain, inside an unsampled context (so that spans its
view starts are dropped, as under the instrumentation's unsampled span), and only the
excluded-URL check is made. A drawn read, a read that carries a context, every other
request, and every request while an SDK ``MeterProvider`` is set (the instrumentation's
``http.server.*`` duration and active-request metrics then record) go through the
instrumentation as before; a drawn read is not drawn again by the sampler.

An unsampled read still counts in ``http_server_requests_total`` and its duration
histogram (``dashboard.api.http_metrics``), which do not depend on spans; without an SDK
``MeterProvider`` (the dashboard sets none) the instrumentation's metric instruments are
no-ops, so nothing it would have recorded is lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import Tracer
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import Attributes

__all__ = ["API_PREFIX", "MIDDLEWARE", "ApiReadMiddleware", "ApiReadSampler", "sample_api_reads"]

API_PREFIX = "/api/"
_READS = frozenset({"GET", "HEAD"})
# Old and new HTTP semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN).
_METHOD_KEYS = ("http.request.method", "http.method")
_PATH_KEYS = ("url.path", "http.target")
_URL_KEYS = ("url.full", "http.url")  # WSGI servers that give no RAW_URI / REQUEST_URI
# Set while ApiReadMiddleware hands a read it drew to the instrumentation: not drawn twice.
_drawn: ContextVar[bool] = ContextVar("api_read_drawn", default=False)


def is_api_read(attributes: Attributes) -> bool:
    if not attributes:
        return False
    method = next((attributes[k] for k in _METHOD_KEYS if k in attributes), None)
    if method not in _READS:
        return False
    path = next((attributes[k] for k in _PATH_KEYS if k in attributes), None)
    if path is None:
        url = next((attributes[k] for k in _URL_KEYS if k in attributes), None)
        path = urlsplit(url).path if isinstance(url, str) else None
    return isinstance(path, str) and path.startswith(API_PREFIX)


class ApiReadSampler(Sampler):
    """``delegate``'s decision, except for API reads that start a trace (see above)."""

    def __init__(self, delegate: Sampler, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be between 0 and 1, got {ratio!r}")
        self.delegate = delegate
        self.ratio = ratio
        self._reads = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if (
            kind == SpanKind.SERVER
            and self.ratio < 1.0
            and is_api_read(attributes)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
            and not _drawn.get()
        ):
            drawn = self._reads.should_sample(parent_context, trace_id, name, kind, attributes)
            if drawn.decision == Decision.DROP:
                return drawn
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"ApiReadSampler{{{self.ratio},{self.delegate.get_description()}}}"


def sample_api_reads(tracer: Any, ratio: float) -> bool:
    """Put an :class:`ApiReadSampler` in front of ``tracer``'s sampler (an SDK tracer:
    the Django instrumentation's, which only that instrumentation uses); True if done.

    Idempotent: a tracer that has one gets the new ratio."""
    if not isinstance(tracer, Tracer):
        return False
    current = tracer.sampler
    delegate = current.delegate if isinstance(current, ApiReadSampler) else current
    tracer.sampler = ApiReadSampler(delegate, ratio)
    return True


MIDDLEWARE = f"{__name__}.ApiReadMiddleware"


class ApiReadMiddleware(_DjangoMiddleware):
    """The Django instrumentation's middleware, skipped for an API read it would not
    record (see the module's docstring)."""

    def __call__(self, request: HttpRequest) -> Any:
        if request.method not in _READS:
            return self._instrumented(request)
        if not request.path.startswith(API_PREFIX):
            return self._instrumented(request)
        sampler = getattr(self._tracer, "sampler", None)
        if (
            not isinstance(sampler, ApiReadSampler)
            or sampler.ratio >= 1.0
            or _carries_context(request)
            or isinstance(metrics.get_meter_provider(), MeterProvider)
        ):
            return self._instrumented(request)
        if random.random() < sampler.ratio:
            token = _drawn.set(True)
            try:
                return self._instrumented(request)
            finally:
                _drawn.reset(token)
        get_response: Callable[[HttpRequest], HttpResponseBase] = self.get_response
        if self._excluded_urls.url_disabled(request.build_absolute_uri("?")):
            return get_response(request)  # the instrumentation would start no span either
        attached = context.attach(trace.set_span_in_context(_unsampled_span()))
        try:
            return get_response(request)
        finally:
            context.detach(attached)

    def _instrumented(self, request: HttpRequest) -> Any:
        otel: Any = super()
        return otel.__call__(request)

    # Django calls these for every request. Without a span (skipped, excluded) the
    # instrumentation's own do nothing, after an excluded-URL check each.
    def process_view(self, request: HttpRequest, view_func: Any, *args: Any, **kwargs: Any) -> None:
        if self._environ_span_key in request.META:
            otel: Any = super()  # untyped
            otel.process_view(request, view_func, *args, **kwargs)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if self._environ_activation_key in request.META:
            otel: Any = super()
            otel.process_exception(request, exception)


def _unsampled_span() -> NonRecordingSpan:
    # What the SDK tracer gives a dropped span: new ids, not sampled.
    return NonRecordingSpan(
        SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )


_context_keys: tuple[object, frozenset[str]] = (None, frozenset())


def _carries_context(request: HttpRequest) -> bool:
    """True if ``request`` has a header the global propagator reads (a parent, baggage)."""
    global _context_keys
    propagator = propagate.get_global_textmap()
    owner, keys = _context_keys
    if owner is not propagator:
        keys = frozenset("HTTP_" + f.upper().replace("-", "_") for f in propagator.fields)
        _context_keys = (propagator, keys)
    meta = request.META
    return any(key in meta for key in keys)
