"""Where spans go besides the database: ``OTEL_TRACES_EXPORTER``, as the SDKs read it.

``OTEL_TRACES_EXPORTER`` is a comma-separated list of ``otlp`` (http/protobuf, to
``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``, default ``http://localhost:4318``),
``console`` (stdout), ``zipkin`` (needs ``opentelemetry-exporter-zipkin``, to
``OTEL_EXPORTER_ZIPKIN_ENDPOINT``) or ``none``. Unset, spans go over OTLP only when an
OTLP endpoint is set (this project's default: the database is the primary store).
Sampling (``OTEL_TRACES_SAMPLER`` / ``_ARG``) and ``OTEL_RESOURCE_ATTRIBUTES`` are read
by the OpenTelemetry SDK itself when the provider is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from .tracing import otlp_processor

KNOWN = ("otlp", "console", "zipkin", "none")
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


def otlp_processor_from_env(env: Mapping[str, str]) -> SpanProcessor | None:
    """OTLP to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or the base endpoint + ``/v1/traces``."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint = f"{base.rstrip('/')}/v1/traces" if base else ""
    return otlp_processor(endpoint)


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
    env = os.environ if environ is None else environ
    if not names:
        otlp = otlp_processor_from_env(env)
        return [] if otlp is None else [otlp]
    processors: list[SpanProcessor] = []
    for name in names:
        if name == "otlp":
            with_default = dict(env)
            if not env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") and not env.get(
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            ):
                with_default["OTEL_EXPORTER_OTLP_ENDPOINT"] = DEFAULT_OTLP_ENDPOINT
            otlp = otlp_processor_from_env(with_default)
            if otlp is not None:
                processors.append(otlp)
        elif name == "console":
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "zipkin":
            processors.append(_zipkin(env))
    return processors


def _zipkin(env: Mapping[str, str]) -> SpanProcessor:
    try:
        from opentelemetry.exporter.zipkin.json import (  # type: ignore[import-not-found]
            ZipkinExporter,
        )
    except ImportError as exc:
        raise ImproperlyConfigured(
            "OTEL_TRACES_EXPORTER=zipkin needs the opentelemetry-exporter-zipkin package"
        ) from exc
    endpoint = env.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT") or None
    return BatchSpanProcessor(ZipkinExporter(endpoint=endpoint))
