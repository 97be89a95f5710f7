"""dashboard/traces/request_sampling.py: API reads sampled, everything else as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from opentelemetry import trace
from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from dashboard.traces import request_sampling, tracing
from dashboard.traces.models import SpanRecord, TraceSummary
from dashboard.traces.request_sampling import ApiReadSampler, sample_api_reads


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def spans_inside(request: HttpRequest) -> HttpResponse:
    with trace.get_tracer("tests.request_sampling").start_as_current_span("inside"):
        return HttpResponse("ok")


urlpatterns = [
    path("api/read/", csrf_exempt(ok)),
    path("api/inside/", spans_inside),
    path("page/", ok),
]

OLD = {"http.method": "GET", "http.target": "/api/observability/metrics"}
NEW = {"http.request.method": "HEAD", "url.path": "/api/observability/health"}
LOW_ID, HIGH_ID = 1, (1 << 128) - 1  # drawn in / out by TraceIdRatioBased at 0 < r < 1


def decide(sampler: ApiReadSampler, attributes: dict[str, str], **kw: object) -> Decision:
    return sampler.should_sample(
        kw.get("parent"),  # type: ignore[arg-type]
        int(kw.get("trace_id", LOW_ID)),  # type: ignore[call-overload]
        "GET x",
        kind=kw.get("kind", SpanKind.SERVER),  # type: ignore[arg-type]
        attributes=attributes,
    ).decision


def sampled_parent() -> object:
    parent = SpanContext(
        trace_id=HIGH_ID, span_id=7, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


WSGI = {"http.method": "GET", "http.url": "http://testserver/api/observability/metrics?x=1"}


@pytest.mark.parametrize("attributes", [OLD, NEW, WSGI], ids=["old-semconv", "new-semconv", "url"])
def test_an_api_read_starting_a_trace_is_dropped_at_ratio_zero(attributes: dict[str, str]) -> None:
    assert decide(ApiReadSampler(ALWAYS_ON, 0.0), attributes) == Decision.DROP


def test_at_a_ratio_the_trace_id_decides_as_trace_id_ratio_based_does() -> None:
    sampler = ApiReadSampler(ALWAYS_ON, 0.5)
    assert decide(sampler, OLD, trace_id=LOW_ID) == Decision.RECORD_AND_SAMPLE
    assert decide(sampler, OLD, trace_id=HIGH_ID) == Decision.DROP


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"http.method": "POST", "http.target": "/api/observability/metrics/reset"}, None),
        ({"http.method": "DELETE", "http.target": "/api/observability/alerts/rules/1"}, None),
        ({"http.method": "GET", "http.target": "/traces/"}, None),
        ({"http.method": "GET", "http.target": "/apiary/"}, None),
        ({}, None),
        (OLD, SpanKind.INTERNAL),
    ],
    ids=["post", "delete", "page", "not-api", "no-attributes", "not-a-server-span"],
)
def test_everything_else_is_the_providers_decision(
    attributes: dict[str, str], kind: SpanKind | None
) -> None:
    sampler = ApiReadSampler(ALWAYS_ON, 0.0)
    assert decide(sampler, attributes, kind=kind or SpanKind.SERVER) == Decision.RECORD_AND_SAMPLE


def test_a_read_continuing_a_sampled_trace_is_recorded() -> None:
    sampler = ApiReadSampler(ALWAYS_ON, 0.0)
    assert decide(sampler, OLD, parent=sampled_parent()) == Decision.RECORD_AND_SAMPLE


def test_the_providers_sampler_still_has_the_last_word() -> None:
    assert decide(ApiReadSampler(ALWAYS_OFF, 1.0), OLD) == Decision.DROP
    assert decide(ApiReadSampler(ALWAYS_OFF, 0.5), OLD) == Decision.DROP


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_ratio_outside_zero_to_one_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio must be between 0 and 1"):
        ApiReadSampler(ALWAYS_ON, ratio)


def test_applying_twice_replaces_the_ratio_not_the_providers_sampler() -> None:
    tracer = trace.get_tracer_provider().get_tracer("tests.request_sampling")
    original = tracer.sampler  # type: ignore[attr-defined]
    try:
        assert sample_api_reads(tracer, 0.2) and sample_api_reads(tracer, 0.3)
        assert tracer.sampler.ratio == 0.3  # type: ignore[attr-defined]
        assert tracer.sampler.delegate is original  # type: ignore[attr-defined]
    finally:
        tracer.sampler = original  # type: ignore[attr-defined]
    assert not sample_api_reads(trace.NoOpTracer(), 0.5)


@pytest.fixture
def stored_spans() -> Iterator[None]:
    processor = tracing.processor()
    assert processor is not None
    processor.enabled = True
    processor.force_flush()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    yield
    processor.force_flush()
    tracing.instrument_django()  # back to the configured ratio


def server_spans() -> list[str]:
    processor = tracing.processor()
    assert processor is not None and processor.force_flush()
    return sorted(SpanRecord.objects.filter(kind="SERVER").values_list("name", flat=True))


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_through_django_reads_are_not_stored_and_the_rest_is(
    client: Client, stored_spans: None
) -> None:
    with override_settings(TRACES_API_READ_RATIO=0):
        tracing.instrument_django()
    assert client.get("/api/read/").status_code == 200
    assert server_spans() == []
    client.post("/api/read/")
    client.get("/page/")
    traceparent = f"00-{HIGH_ID:032x}-{7:016x}-01"
    client.get("/api/read/", HTTP_TRACEPARENT=traceparent)
    assert server_spans() == ["GET api/read/", "GET page/", "POST api/read/"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_at_ratio_one_every_read_is_stored(client: Client, stored_spans: None) -> None:
    with override_settings(TRACES_API_READ_RATIO=1):
        tracing.instrument_django()
    client.get("/api/read/")
    assert server_spans() == ["GET api/read/"]


@pytest.fixture
def otel_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the instrumentation's middleware started work for (process_request)."""
    seen: list[str] = []
    original = _DjangoMiddleware.process_request

    def counted(self: _DjangoMiddleware, request: HttpRequest) -> None:
        seen.append(request.path)
        original(self, request)

    monkeypatch.setattr(_DjangoMiddleware, "process_request", counted)
    return seen


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_an_unsampled_read_skips_the_instrumentation_and_its_view_spans_are_dropped(
    client: Client, stored_spans: None, otel_work: list[str]
) -> None:
    with override_settings(TRACES_API_READ_RATIO=0):
        tracing.instrument_django()
    assert client.get("/api/inside/").status_code == 200
    assert client.head("/api/read/").status_code == 200
    assert otel_work == []
    assert server_spans() == []
    assert not SpanRecord.objects.exists()  # "inside" had an unsampled parent
    traceparent = f"00-{HIGH_ID:032x}-{7:016x}-01"
    client.get("/api/inside/", HTTP_TRACEPARENT=traceparent)
    client.get("/page/")
    client.post("/api/read/")
    assert otel_work == ["/api/inside/", "/page/", "/api/read/"]
    assert server_spans() == ["GET api/inside/", "GET page/", "POST api/read/"]
    assert SpanRecord.objects.get(name="inside").trace_id == f"{HIGH_ID:032x}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_a_read_drawn_by_the_middleware_is_not_drawn_again_by_the_sampler(
    client: Client, stored_spans: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with override_settings(TRACES_API_READ_RATIO=0.5):
        tracing.instrument_django()
    monkeypatch.setattr(request_sampling.random, "random", lambda: 0.0)  # always drawn
    for _ in range(16):  # the sampler's own draw on the trace id would drop about half
        client.get("/api/read/")
    assert server_spans() == ["GET api/read/"] * 16


def test_with_the_flag_set_the_sampler_does_not_draw() -> None:
    token = request_sampling._drawn.set(True)
    try:
        decision = decide(ApiReadSampler(ALWAYS_ON, 0.5), OLD, trace_id=HIGH_ID)
    finally:
        request_sampling._drawn.reset(token)
    assert decision == Decision.RECORD_AND_SAMPLE


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls(__name__)
def test_with_an_sdk_meter_provider_every_read_goes_through_the_instrumentation(
    client: Client, stored_spans: None, otel_work: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with override_settings(TRACES_API_READ_RATIO=0):
        tracing.instrument_django()
    monkeypatch.setattr(request_sampling.metrics, "get_meter_provider", MeterProvider)
    client.get("/api/read/")
    assert otel_work == ["/api/read/"]  # its duration/active-request metrics record
    assert server_spans() == []  # and the sampler still drops the span
