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

An unsampled read still counts in ``http_server_requests_total`` and its duration
histogram (``dashboard.api.http_metrics``), which do not depend on spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

__all__ = ["API_PREFIX", "ApiReadSampler", "sample_api_reads"]

API_PREFIX = "/api/"
_READS = frozenset({"GET", "HEAD"})
# Old and new HTTP semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN).
_METHOD_KEYS = ("http.request.method", "http.method")
_PATH_KEYS = ("url.path", "http.target")
_URL_KEYS = ("url.full", "http.url")  # WSGI servers that give no RAW_URI / REQUEST_URI


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
