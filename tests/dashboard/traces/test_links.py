"""Span links are stored (local and OTLP-ingested spans, bounded) and shown with events."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from opentelemetry import trace
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.trace import Link, SpanContext

from dashboard.ingest.spans import Limits, convert
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.convert import MAX_LINKS
from dashboard.traces.masking import Masker
from dashboard.traces.models import SpanRecord
from dashboard.traces.services import write_spans

from .test_views import Builder, sid, tid

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_request_spans")]

MASKER = Masker(DEFAULT_MASKED_KEYS)
OTHER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
OTHER_SPAN = 0xB7AD6B7169203331
LIMITS = Limits(max_spans=10, max_attributes=10, max_events=10, max_value_length=100)


@pytest.fixture
def viewer(client: Client) -> Client:
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


def _linked(b: Builder, count: int = 1) -> trace.Span:
    links = [
        Link(
            SpanContext(OTHER_TRACE, OTHER_SPAN + i, is_remote=True),
            {"link.kind": "batch", "api_key": "s3cret"},
        )
        for i in range(count)
    ]
    start = b.now_ns - 1_000_000_000
    span = b.tracer("shop").start_span("consume", links=links, start_time=start)
    span.add_event("picked", {"queue": "orders"}, timestamp=start + 1_000_000)
    span.end(end_time=start + 5_000_000)
    return span


def test_local_span_links_are_stored_masked() -> None:
    b = Builder()
    span = _linked(b)
    b.save()
    record = SpanRecord.objects.get(span_id=sid(span))
    assert record.links == [
        {
            "trace_id": f"{OTHER_TRACE:032x}",
            "span_id": f"{OTHER_SPAN:016x}",
            "attributes": {"link.kind": "batch", "api_key": "***"},
        }
    ]


def test_links_beyond_the_cap_are_dropped_the_span_kept() -> None:
    b = Builder()
    span = _linked(b, count=MAX_LINKS + 5)
    b.save()
    assert len(SpanRecord.objects.get(span_id=sid(span)).links) == MAX_LINKS


def _otlp_span(links: list[Span.Link]) -> ResourceSpans:
    span = Span(
        trace_id=bytes.fromhex("11" * 16),
        span_id=bytes.fromhex("22" * 8),
        name="job",
        start_time_unix_nano=1_767_000_000_000_000_000,
        end_time_unix_nano=1_767_000_000_005_000_000,
        links=links,
    )
    group = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
    group.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="worker"))
    )
    return group


def test_ingested_span_links_are_kept_and_invalid_ones_dropped() -> None:
    good = Span.Link(
        trace_id=bytes.fromhex("33" * 16),
        span_id=bytes.fromhex("44" * 8),
        attributes=[KeyValue(key="why", value=AnyValue(string_value="fan-in"))],
    )
    bad = Span.Link(trace_id=b"\x01", span_id=b"\x02")
    converted = convert([_otlp_span([good, bad, good])], limits=LIMITS, masker=MASKER)
    assert write_spans(converted.rows, masker=MASKER) == 1
    record = SpanRecord.objects.get()
    assert (
        record.links
        == [
            {"trace_id": "33" * 16, "span_id": "44" * 8, "attributes": {"why": "fan-in"}},
        ]
        * 2
    )


def test_ingested_links_are_capped() -> None:
    link = Span.Link(trace_id=bytes.fromhex("33" * 16), span_id=bytes.fromhex("44" * 8))
    converted = convert([_otlp_span([link] * (MAX_LINKS * 3))], limits=LIMITS, masker=MASKER)
    write_spans(converted.rows, masker=MASKER)
    assert len(SpanRecord.objects.get().links) == MAX_LINKS


def test_the_span_detail_shows_events_and_links_with_a_link_to_the_linked_trace(
    viewer: Client,
) -> None:
    b = Builder()
    span = _linked(b)
    b.save()
    response = viewer.get(reverse("traces:span", args=[tid(span), sid(span)]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<h3>Events</h3>" in html and "picked" in html and "orders" in html
    assert "<h3>Links</h3>" in html
    other = reverse("traces:trace", args=[f"{OTHER_TRACE:032x}"])
    assert f'href="{other}?span={OTHER_SPAN:016x}"' in html
    assert "batch" in html and "s3cret" not in html


def test_a_stored_link_with_hostile_ids_is_shown_as_text_without_a_link(viewer: Client) -> None:
    b = Builder()
    span = _linked(b)
    b.save()
    SpanRecord.objects.filter(span_id=sid(span)).update(
        links=[{"trace_id": "<script>x</script>", "span_id": 5}, "not a dict"]
    )
    html = viewer.get(reverse("traces:span", args=[tid(span), sid(span)])).content.decode()
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;" in html
    assert 'class="span-link"' not in html
