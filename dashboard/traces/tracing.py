"""Wire persistence into OpenTelemetry: the global SDK TracerProvider, OTLP, Django.

``install()`` (called by ``dashboard.runtime`` when it starts, if TRACES_ENABLED) is
idempotent. It attaches the database span processor to the global SDK
TracerProvider, creating and setting one if the global is still the API's
proxy; adds the exporters of OTEL_TRACES_EXPORTER (``exporters.py``; unset: OTLP
http/protobuf when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set); and instruments Django.
No thread or connection starts until the first span.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from . import conf
from .processor import DatabaseSpanProcessor, ProcessorStats
from .retention import RetentionWorker

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_processor: DatabaseSpanProcessor | None = None
_retention: RetentionWorker | None = None
_otlp: SpanProcessor | None = None


def default_resource() -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES), service.name from TRACES_SERVICE_NAME,
    else resilience-dashboard."""
    name = conf.service_name()
    resource = Resource.create({SERVICE_NAME: name} if name else None)
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: conf.DEFAULT_SERVICE_NAME}))
    return resource


def new_provider() -> TracerProvider:
    """An SDK provider as installed: the OTEL_* resource; the SDK reads OTEL_TRACES_SAMPLER
    and OTEL_TRACES_SAMPLER_ARG (head sampling) itself."""
    return TracerProvider(resource=default_resource())


def global_sdk_provider() -> TracerProvider | None:
    """The global SDK TracerProvider, set now if the global is still the API's proxy."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(new_provider())
        current = trace.get_tracer_provider()  # someone else may have won the race
    return current if isinstance(current, TracerProvider) else None


def otlp_processor(endpoint: str) -> SpanProcessor | None:
    """A BatchSpanProcessor exporting OTLP http/protobuf to ``endpoint`` (None if empty).

    ``dashboard.settings`` builds the endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is,
    or OTEL_EXPORTER_OTLP_ENDPOINT with ``/v1/traces`` appended (as the OTLP spec says).
    Headers, timeout and compression come from the usual OTEL_EXPORTER_OTLP_* variables,
    read by the exporter itself.
    """
    endpoint = endpoint.strip()
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))


def instrument_django(provider: trace.TracerProvider | None = None) -> bool:
    """Instrument Django requests once; True if this call did it. Every call (re)applies
    the sampling of API reads (``TRACES_API_READ_RATIO``: ``request_sampling``)."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.django.middleware import otel_middleware

    from .request_sampling import MIDDLEWARE, sample_api_reads

    instrumentor = DjangoInstrumentor()
    # Its middleware with the unsampled API reads skipped (request_sampling); the
    # instrumentor inserts and removes the path it holds here.
    instrumentor._opentelemetry_middleware = MIDDLEWARE
    done = False
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider, excluded_urls=conf.excluded_urls())
        done = True
    # The middleware's tracer is its own (its instrumentation scope): only request spans.
    sample_api_reads(otel_middleware._DjangoMiddleware._tracer, conf.api_read_ratio())
    return done


def install(*, django: bool = True) -> DatabaseSpanProcessor | None:
    """Attach span persistence (and OTLP export) to the global provider; idempotent.

    Returns:
        The database span processor, or None if the global TracerProvider is not
        an SDK one (some other tracing setup owns it).
    """
    global _processor, _retention, _otlp
    with _lock:
        if _processor is not None:
            return _processor
        provider = global_sdk_provider()
        if provider is None:
            logger.warning(
                "the global TracerProvider is %r, not the SDK's: spans are not stored",
                trace.get_tracer_provider(),
            )
            return None
        retention = RetentionWorker(
            max_age=conf.max_age(), max_rows=conf.max_rows(), interval=conf.cleanup_interval()
        )
        processor = DatabaseSpanProcessor(
            masked_keys=conf.masked_keys(),
            masked_value_patterns=conf.masked_value_patterns(),
            max_queue=conf.queue_size(),
            max_batch=conf.batch_size(),
            on_first_span=retention.start,
        )
        provider.add_span_processor(processor)
        from .exporters import span_processors_from_env

        exporting = span_processors_from_env()  # OTEL_TRACES_EXPORTER
        for exporter in exporting:
            provider.add_span_processor(exporter)
        otlp = exporting[0] if exporting else None
        if django:
            instrument_django(provider)
        _processor, _retention, _otlp = processor, retention, otlp
        return processor


def processor() -> DatabaseSpanProcessor | None:
    """The installed database span processor, if any."""
    return _processor


def retention() -> RetentionWorker | None:
    """The installed retention worker, if any."""
    return _retention


def flush(timeout: float = 5.0) -> bool:
    """Write every span ended so far (tests, shutdown hooks)."""
    return _processor.force_flush(int(timeout * 1000)) if _processor is not None else True


def stats() -> ProcessorStats:
    """The installed processor's counters (zeros when not installed): for metrics, health."""
    if _processor is None:
        return {"queued": 0, "dropped": 0, "written": 0, "failed": 0, "failed_batches": 0}
    return _processor.stats()
