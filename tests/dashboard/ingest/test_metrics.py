"""POST /v1/metrics: OTLP metrics into the series store, shown on the metrics page."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import settings as fuzzing
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from dashboard.api import testing, throttle
from dashboard.ingest import metrics
from dashboard.ingest.decode import IngestError, parse
from dashboard.ingest.models import MetricPoint, MetricSeries
from dashboard.ingest.spans import Limits, masker_for
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.convert import to_us
from dashboard.traces.masking import DEFAULT_VALUE_PATTERNS

URL = "/v1/metrics"
PB = "application/x-protobuf"
T0 = time.time_ns() // 10**9 * 10**9  # now: older points would be retention's to delete

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _isolated() -> Any:
    throttle.reset()
    yield
    throttle.reset()


@pytest.fixture
def sender() -> dict[str, str]:
    user = testing.make_user("worker", "traces.ingest_spans")
    return testing.bearer(testing.token_for(user))


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _request(*items: Metric, service: str = "billing", instance: str = "w-1") -> bytes:
    group = ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=list(items))])
    group.resource.attributes.extend([_kv("service.name", service)])
    if instance:
        group.resource.attributes.extend([_kv("service.instance.id", instance)])
    return ExportMetricsServiceRequest(resource_metrics=[group]).SerializeToString()


def _counter(value: int, *, at: int = T0, **labels: str) -> Metric:
    point = NumberDataPoint(time_unix_nano=at, as_int=value)
    point.attributes.extend(_kv(k, v) for k, v in labels.items())
    return Metric(name="jobs", unit="1", sum=Sum(data_points=[point], is_monotonic=True))


def _post(client: Client, body: bytes, auth: dict[str, str], ctype: str = PB, **extra: Any) -> Any:
    return client.post(URL, data=body, content_type=ctype, **auth, **extra)


def test_counter_gauge_and_histogram_are_stored_by_service_instance_and_labels(
    client: Client, sender: dict[str, str]
) -> None:
    gauge = Metric(
        name="queue.depth",
        gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=T0, as_double=3.5)]),
    )
    histogram = Metric(
        name="latency",
        unit="s",
        histogram=Histogram(data_points=[HistogramDataPoint(time_unix_nano=T0, count=4, sum=2.0)]),
    )
    body = _request(
        _counter(5, queue="a", api_key="s3cret"), _counter(7, queue="b"), gauge, histogram
    )
    response = _post(client, body, sender)
    assert response.status_code == 200
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(response.content)
    assert not answer.HasField("partial_success")
    stored = {
        (s.name, s.labels.get("queue")): (s.service, s.instance, s.kind, s.last_value)
        for s in MetricSeries.objects.all()
    }
    assert stored == {
        ("jobs", "a"): ("billing", "w-1", "counter", 5.0),
        ("jobs", "b"): ("billing", "w-1", "counter", 7.0),
        ("queue.depth", None): ("billing", "w-1", "gauge", 3.5),
        ("latency_count", None): ("billing", "w-1", "histogram", 4.0),
        ("latency_sum", None): ("billing", "w-1", "histogram", 2.0),
    }
    masked = MetricSeries.objects.get(name="jobs", labels__queue="a")
    assert masked.labels["api_key"] == "***"
    assert MetricPoint.objects.count() == 5


def test_later_points_extend_the_same_series_and_update_its_last_value(
    client: Client, sender: dict[str, str]
) -> None:
    _post(client, _request(_counter(5, queue="a")), sender)
    _post(client, _request(_counter(9, at=T0 + 10**9, queue="a")), sender)
    _post(client, _request(_counter(1, at=T0 - 10**9, queue="a")), sender)  # late, older
    series = MetricSeries.objects.get()
    assert series.last_value == 9.0
    assert sorted(series.points.values_list("value", flat=True)) == [1.0, 5.0, 9.0]
    _post(client, _request(_counter(2, queue="a"), instance="w-2"), sender)
    assert MetricSeries.objects.count() == 2  # another instance: another series


def test_json_and_gzip_are_accepted_and_answered_in_kind(
    client: Client, sender: dict[str, str]
) -> None:
    payload = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "curl"}}]
                },
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "temp",
                                "gauge": {
                                    "dataPoints": [{"timeUnixNano": str(T0), "asDouble": 21.5}]
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    body = gzip.compress(json.dumps(payload).encode())
    response = _post(client, body, sender, "application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert response.json() == {}
    series = MetricSeries.objects.get()
    assert (series.service, series.instance, series.name, series.last_value) == (
        "curl",
        "",
        "temp",
        21.5,
    )


def test_invalid_points_are_rejected_in_partial_success(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_SPANS = 2
    no_time = _counter(1, at=0)
    infinite = Metric(
        name="g", gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=T0, as_double=1e999)])
    )
    body = _request(no_time, infinite, _counter(1, q="1"), _counter(2, q="2"), _counter(3, q="3"))
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(_post(client, body, sender).content)
    assert answer.partial_success.rejected_data_points == 3
    message = answer.partial_success.error_message
    assert "without timeUnixNano" in message and "non-finite" in message and "limit of 2" in message
    assert MetricPoint.objects.count() == 2


@pytest.mark.parametrize(
    ("auth", "status"),
    [({}, 401), ({"HTTP_AUTHORIZATION": "Bearer rdt_nope"}, 401)],
)
def test_metrics_need_an_ingest_token(client: Client, auth: dict[str, str], status: int) -> None:
    assert _post(client, _request(_counter(1)), auth).status_code == status
    assert not MetricSeries.objects.exists()


def test_a_token_without_the_ingest_permission_is_403(client: Client) -> None:
    reader = testing.bearer(testing.token_for(testing.make_user("r", "dashboard.view_dashboard")))
    assert _post(client, _request(_counter(1)), reader).status_code == 403


def test_bad_bodies_are_4xx_never_500(client: Client, sender: dict[str, str]) -> None:
    assert _post(client, b"\xff\xfe garbage", sender).status_code == 400
    assert _post(client, b"{not json", sender, "application/json").status_code == 400
    assert _post(client, b"x", sender, "text/plain").status_code == 415
    assert _post(client, b"x", sender, HTTP_CONTENT_ENCODING="br").status_code == 415


def test_retention_deletes_old_points_and_empty_series() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    old, new = to_us(now - timedelta(hours=2)), to_us(now - timedelta(minutes=5))
    stale = MetricSeries.objects.create(
        service="s", name="old", labels_key="a", kind="gauge", last_value=1, last_us=old
    )
    live = MetricSeries.objects.create(
        service="s", name="new", labels_key="a", kind="gauge", last_value=1, last_us=new
    )
    MetricPoint.objects.create(series=stale, time_us=old, value=1)
    MetricPoint.objects.create(series=live, time_us=old, value=1)
    MetricPoint.objects.create(series=live, time_us=new, value=2)
    assert metrics.cleanup(now=now, max_age=timedelta(hours=1)) == 2
    assert list(MetricSeries.objects.values_list("name", flat=True)) == ["new"]
    assert list(MetricPoint.objects.values_list("value", flat=True)) == [2.0]


def test_cleanup_runs_at_most_once_a_minute_per_process() -> None:
    metrics._last_cleanup = float("-inf")
    now = [1000.0]
    assert metrics.cleanup_due(lambda: now[0])
    now[0] += 59
    assert not metrics.cleanup_due(lambda: now[0])
    now[0] += 2
    assert metrics.cleanup_due(lambda: now[0])


def test_the_metrics_page_lists_series_by_service_and_instance(
    client: Client, sender: dict[str, str]
) -> None:
    _post(client, _request(_counter(5, queue="a"), service="billing", instance="w-7"), sender)
    viewer = testing.make_user("viewer", "dashboard.view_dashboard")
    client.force_login(viewer)
    page = client.get("/charts/").content.decode()
    assert "billing" in page and "w-7" in page and "queue=a" in page and "jobs" in page


@fuzzing(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_metric_bodies_give_a_4xx_or_points_never_another_error(body: bytes) -> None:
    limits = Limits(max_spans=10, max_attributes=10, max_events=10, max_value_length=100)
    try:
        message = parse(ExportMetricsServiceRequest(), body, content_type=PB)
    except IngestError as exc:
        assert 400 <= exc.status < 500
        return
    masker = masker_for(DEFAULT_MASKED_KEYS, DEFAULT_VALUE_PATTERNS)
    metrics.convert(message.resource_metrics, limits=limits, masker=masker)


def _answer(response: Any) -> ExportMetricsServiceResponse:
    assert response.status_code == 200
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(response.content)
    return answer


def test_new_series_beyond_the_cap_are_rejected_and_existing_ones_still_update(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_METRIC_SERIES = 3
    _post(client, _request(_counter(1, q="a"), _counter(1, q="b")), sender)
    # Many label combinations in one request: one more fits, the rest are refused.
    hostile = [_counter(i, at=T0 + 10**9, q=f"x{i}") for i in range(50)]
    answer = _answer(_post(client, _request(_counter(2, at=T0 + 10**9, q="a"), *hostile), sender))
    assert answer.partial_success.rejected_data_points == 49
    assert "49 data points of new series beyond 3" in answer.partial_success.error_message
    assert MetricSeries.objects.count() == 3
    assert MetricSeries.objects.get(labels__q="a").last_value == 2.0
    assert MetricSeries.objects.filter(labels__q="x0").exists()
    # Full: a known series still takes points (and a refused one stays refused).
    later = T0 + 2 * 10**9
    answer = _answer(_post(client, _request(_counter(3, at=later, q="b"), hostile[5]), sender))
    assert answer.partial_success.rejected_data_points == 1
    assert MetricSeries.objects.get(labels__q="b").last_value == 3.0
    assert MetricPoint.objects.count() == 5


def test_the_cap_counts_series_of_every_service_and_frees_up_with_retention(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_METRIC_SERIES = 2
    for service in ("a", "b", "c"):
        _post(client, _request(_counter(1), service=service), sender)
    assert sorted(MetricSeries.objects.values_list("service", flat=True)) == ["a", "b"]
    now = datetime.fromtimestamp(T0 / 1e9, tz=UTC) + timedelta(hours=2)
    metrics.cleanup(now=now, max_age=timedelta(hours=1))
    answer = _answer(_post(client, _request(_counter(1), service="c"), sender))
    assert answer.partial_success.rejected_data_points == 0
    assert list(MetricSeries.objects.values_list("service", flat=True)) == ["c"]


def test_huge_label_names_and_values_are_truncated_or_rejected_never_stored_whole(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_VALUE_LENGTH = 100
    big = _counter(1, **{"k" * 10_000: "v" * 100_000})
    many = _counter(2, **{f"label{i:03}".ljust(100, "k"): "v" * 100 for i in range(128)})
    answer = _answer(_post(client, _request(big, many), sender))
    assert answer.partial_success.rejected_data_points == 1
    assert "labels over 16384 bytes" in answer.partial_success.error_message
    series = MetricSeries.objects.get()
    assert series.labels == {"k" * 100: "v" * 100}


def test_many_metrics_in_one_request_are_bounded_by_the_point_limit(
    client: Client, sender: dict[str, str], settings: Any
) -> None:
    settings.INGEST_MAX_SPANS = 100
    settings.INGEST_MAX_METRIC_SERIES = 1000
    many = [
        Metric(name=f"m{i}", gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=T0)]))
        for i in range(500)
    ]
    answer = _answer(_post(client, _request(*many), sender))
    assert answer.partial_success.rejected_data_points == 400
    assert MetricSeries.objects.count() == 100
