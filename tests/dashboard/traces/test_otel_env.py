"""The standard OpenTelemetry variables: exporters, head sampling, resource attributes."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from dashboard.traces.exporters import exporter_names, span_processors_from_env
from dashboard.traces.tracing import default_resource, new_provider

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def exporter_of(processor: object) -> object:
    assert isinstance(processor, BatchSpanProcessor)
    return processor._batch_processor._exporter


def shut(processors: list[object]) -> None:
    for processor in processors:
        processor.shutdown()  # type: ignore[attr-defined]


def test_unset_exports_over_otlp_only_when_an_endpoint_is_set() -> None:
    assert span_processors_from_env({}) == []
    processors = span_processors_from_env(ENDPOINT)
    assert len(processors) == 1
    assert type(exporter_of(processors[0])).__name__ == "OTLPSpanExporter"
    shut(processors)


def test_none_turns_export_off_even_with_an_endpoint() -> None:
    assert span_processors_from_env({"OTEL_TRACES_EXPORTER": "none", **ENDPOINT}) == []


def test_otlp_without_an_endpoint_uses_the_spec_default() -> None:
    (processor,) = span_processors_from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert exporter_of(processor)._endpoint == "http://localhost:4318/v1/traces"  # type: ignore[attr-defined]
    shut([processor])


def test_console_prints_finished_spans() -> None:
    processors = span_processors_from_env({"OTEL_TRACES_EXPORTER": "console, otlp", **ENDPOINT})
    assert [type(exporter_of(p)).__name__ for p in processors] == [
        "ConsoleSpanExporter",
        "OTLPSpanExporter",
    ]
    console = processors[0]
    exporter = exporter_of(console)
    assert isinstance(exporter, ConsoleSpanExporter)
    exporter.out = out = io.StringIO()  # stdout, bound when the SDK was imported
    provider = new_provider()
    provider.add_span_processor(console)
    with provider.get_tracer("t").start_as_current_span("printed-span"):
        pass
    provider.force_flush()
    printed = json.loads(out.getvalue())
    assert printed["name"] == "printed-span"
    provider.shutdown()
    shut(processors[1:])


@pytest.mark.parametrize(
    ("value", "message"),
    [("jaeger", "unknown exporter 'jaeger'"), ("none,otlp", "'none' cannot be combined")],
)
def test_bad_exporter_lists_are_refused_clearly(value: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        exporter_names({"OTEL_TRACES_EXPORTER": value})


def test_zipkin_needs_its_package() -> None:
    env = {"OTEL_TRACES_EXPORTER": "zipkin"}
    if importlib.util.find_spec("opentelemetry.exporter.zipkin") is None:
        with pytest.raises(ImproperlyConfigured, match="opentelemetry-exporter-zipkin"):
            span_processors_from_env(env)
    else:  # pragma: no cover - the package is optional
        (processor,) = span_processors_from_env(env)
        assert type(exporter_of(processor)).__name__ == "ZipkinExporter"
        shut([processor])


def test_head_sampling_follows_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    provider = new_provider()
    assert isinstance(provider.sampler, ParentBased)
    with provider.get_tracer("t").start_as_current_span("dropped") as span:
        assert not span.is_recording()
    provider.shutdown()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    provider = new_provider()
    assert isinstance(provider.sampler, TraceIdRatioBased)
    with provider.get_tracer("t").start_as_current_span("kept") as span:
        assert span.is_recording()
    provider.shutdown()


def test_resource_attributes_come_from_otel_resource_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.name=shop"
    )
    attributes = default_resource().attributes
    assert attributes["deployment.environment"] == "staging"
    assert attributes["service.name"] == "shop"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    attributes = new_provider().resource.attributes
    assert attributes["service.name"] == "resilience-dashboard"
    assert attributes["deployment.environment"] == "prod"
