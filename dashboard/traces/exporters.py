"""Where spans go besides the database: ``OTEL_TRACES_EXPORTER``, as the SDKs read it.

``OTEL_TRACES_EXPORTER`` is a comma-separated list of ``otlp`` (http/protobuf, to
``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``, default ``http://localhost:4318``),
``console`` (stdout), ``zipkin`` (needs ``opentelemetry-exporter-zipkin``, to
``OTEL_EXPORTER_ZIPKIN_ENDPOINT``) or ``none``. Unset, spans go over OTLP only when an
OTLP endpoint is set (this project's default: the database is the primary store).
``dashboard.settings`` reads these variables (``TRACES_EXPORTERS``, ``TRACES_OTLP_ENDPOINT``,
``TRACES_ZIPKIN_ENDPOINT``); this module reads Django settings, or a mapping given to it.
Sampling (``OTEL_TRACES_SAMPLER`` / ``_ARG``) and ``OTEL_RESOURCE_ATTRIBUTES`` are read
by the OpenTelemetry SDK itself when the provider is built.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from .tracing import otlp_processor

KNOWN = ("otlp", "console", "zipkin", "none")
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


def otlp_endpoint_from_env(env: Mapping[str, str]) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or the base endpoint + ``/v1/traces`` ("" if
    neither is set), as the OTLP exporter specification resolves them."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint = f"{base.rstrip('/')}/v1/traces" if base else ""
    return endpoint


def otlp_processor_from_env(env: Mapping[str, str]) -> SpanProcessor | None:
    """OTLP to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or the base endpoint + ``/v1/traces``."""
    return otlp_processor(otlp_endpoint_from_env(env))


def _endpoints(environ: Mapping[str, str] | None) -> tuple[str, str]:
    """(OTLP traces endpoint, Zipkin endpoint): from ``environ`` when given, else from
    the settings ``dashboard.settings`` read from the environment."""
    if environ is not None:
        return otlp_endpoint_from_env(environ), environ.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "")
    otlp = str(getattr(settings, "TRACES_OTLP_ENDPOINT", "") or "").strip()
    zipkin = str(getattr(settings, "TRACES_ZIPKIN_ENDPOINT", "") or "").strip()
    return otlp, zipkin


def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The parsed ``OTEL_TRACES_EXPORTER`` (empty when unset).

    Raises:
        ImproperlyConfigured: an unknown name, or ``none`` together with another.
    """
    if environ is None:  # the server: dashboard.settings read OTEL_TRACES_EXPORTER
        raw = ",".join(getattr(settings, "TRACES_EXPORTERS", []))
    else:
        raw = environ.get("OTEL_TRACES_EXPORTER", "")
    names = [name.strip().lower() for name in raw.split(",")]
    names = list(dict.fromkeys(name for name in names if name))
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise ImproperlyConfigured(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (use {', '.join(KNOWN)})"
        )
    if "none" in names and len(names) > 1:
        raise ImproperlyConfigured("OTEL_TRACES_EXPORTER: 'none' cannot be combined with others")
    return names


def span_processors_from_env(environ: Mapping[str, str] | None = None) -> list[SpanProcessor]:
    """One processor per configured exporter (none, or OTLP if an endpoint is set, when unset).

    Raises:
        ImproperlyConfigured: see :func:`exporter_names`; ``zipkin`` without its package.
    """
    names = exporter_names(environ)
    otlp_endpoint, zipkin_endpoint = _endpoints(environ)
    if not names:
        otlp = otlp_processor(otlp_endpoint)
        return [] if otlp is None else [otlp]
    processors: list[SpanProcessor] = []
    for name in names:
        if name == "otlp":
            otlp = otlp_processor(otlp_endpoint or f"{DEFAULT_OTLP_ENDPOINT}/v1/traces")
            if otlp is not None:
                processors.append(otlp)
        elif name == "console":
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "zipkin":
            processors.append(_zipkin(zipkin_endpoint))
    return processors


def _zipkin(endpoint: str) -> SpanProcessor:
    try:
        from opentelemetry.exporter.zipkin.json import (  # type: ignore[import-not-found]
            ZipkinExporter,
        )
    except ImportError as exc:
        raise ImproperlyConfigured(
            "OTEL_TRACES_EXPORTER=zipkin needs the opentelemetry-exporter-zipkin package"
        ) from exc
    return BatchSpanProcessor(ZipkinExporter(endpoint=endpoint or None))
