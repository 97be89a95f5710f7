"""Which OpenTelemetry TracerProvider the facade uses, and the OTel tracer taken from it.

By default that is the GLOBAL provider, so spans from auto-instrumentation (Django,
ASGI) and ours share traces. When nothing installed one (the global is still
OpenTelemetry's proxy), the first span installs an SDK provider whose Resource names
the service from ``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``), else
``"resilience"``. ``configure(tracer_provider=...)`` swaps in a private provider
without touching the set-once global: tests use this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "INSTRUMENTATION_NAME",
    "add_span_processor",
    "build_provider",
    "configure",
    "otel_tracer",
    "provider",
    "state",
]

DEFAULT_SERVICE_NAME = "resilience"
INSTRUMENTATION_NAME = "resilience"


class _State:
    __slots__ = ("lock", "otel_tracer", "override")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.override: otel_trace.TracerProvider | None = None
        # Read without the lock on every span: one attribute load and a None test.
        self.otel_tracer: otel_trace.Tracer | None = None


state = _State()


def _resource(service_name: str | None) -> Resource:
    if service_name is not None:
        return Resource.create({SERVICE_NAME: service_name})
    resource = Resource.create()
    current = str(resource.attributes.get(SERVICE_NAME, ""))
    if not current or current.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def build_provider(
    *, service_name: str | None = None, span_processors: Iterable[SpanProcessor] = ()
) -> SDKTracerProvider:
    """Build (without installing) the SDK TracerProvider the facade would install.

    Args:
        service_name: the Resource's ``service.name``; default from ``OTEL_SERVICE_NAME``,
            then ``OTEL_RESOURCE_ATTRIBUTES``, then ``"resilience"``.
        span_processors: added in order.

    Returns:
        A new SDK TracerProvider.
    """
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise ConfigValueError(f"service_name must be a non-empty str, got {service_name!r}")
    built = SDKTracerProvider(resource=_resource(service_name))
    for processor in span_processors:
        built.add_span_processor(processor)
    return built


def _global_provider(service_name: str | None = None) -> otel_trace.TracerProvider:
    current = otel_trace.get_tracer_provider()
    if isinstance(current, otel_trace.ProxyTracerProvider):
        with state.lock:
            current = otel_trace.get_tracer_provider()
            if isinstance(current, otel_trace.ProxyTracerProvider):
                otel_trace.set_tracer_provider(build_provider(service_name=service_name))
                current = otel_trace.get_tracer_provider()
    return current


def provider() -> otel_trace.TracerProvider:
    """The TracerProvider spans come from: the configured one, else the global one.

    Installs an SDK provider as the global one when none is installed yet.
    """
    override = state.override
    return override if override is not None else _global_provider()


def otel_tracer() -> otel_trace.Tracer:
    """The OTel tracer of :func:`provider`, cached until the next :func:`configure`."""
    with state.lock:
        tracer = state.otel_tracer
        if tracer is None:
            tracer = provider().get_tracer(INSTRUMENTATION_NAME)
            state.otel_tracer = tracer
        return tracer


def _sdk(target: otel_trace.TracerProvider) -> SDKTracerProvider:
    if not isinstance(target, SDKTracerProvider):
        raise ConfigTypeError(
            f"span processors need an opentelemetry.sdk TracerProvider, got {target!r}"
        )
    return target


def configure(
    *,
    tracer_provider: otel_trace.TracerProvider | None = None,
    service_name: str | None = None,
    span_processors: Iterable[SpanProcessor] = (),
) -> otel_trace.TracerProvider:
    """Choose the TracerProvider the facade uses; call it at start-up, before spans start.

    Args:
        tracer_provider: use this provider from now on instead of the global one. It is
            NOT installed globally (so tests can install a fresh one each time).
            ``None`` goes back to the global provider.
        service_name: with no ``tracer_provider``: install the global SDK provider now
            with this ``service.name``. If a global provider already exists it must
            carry the same name.
        span_processors: added to the provider in use (it must be an SDK provider).

    Returns:
        The provider in use.

    Raises:
        ConfigValueError: ``service_name`` conflicts with the installed global provider,
            or is given together with ``tracer_provider``.
        ConfigTypeError: processors were given but the provider is not an SDK one.
    """
    processors = list(span_processors)
    with state.lock:
        if tracer_provider is not None:
            if service_name is not None:
                raise ConfigValueError(
                    "service_name cannot be combined with tracer_provider: "
                    "set it on that provider's Resource"
                )
            in_use = tracer_provider
        elif service_name is not None or processors:
            in_use = _global_provider(service_name)
            if service_name is not None:
                resource = getattr(in_use, "resource", None)
                current = resource.attributes.get(SERVICE_NAME) if resource else None
                if current != service_name:
                    raise ConfigValueError(
                        f"service_name {service_name!r} conflicts with the installed "
                        f"global TracerProvider's service.name {current!r}"
                    )
        else:
            in_use = None
        if processors:
            sdk = _sdk(in_use if in_use is not None else _global_provider())
            for processor in processors:
                sdk.add_span_processor(processor)
        state.override = tracer_provider
        state.otel_tracer = None
    return provider()


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach ``processor`` (e.g. the dashboard's database span processor) to :func:`provider`.

    Raises:
        ConfigTypeError: the provider in use is not an SDK TracerProvider.
    """
    _sdk(provider()).add_span_processor(processor)
