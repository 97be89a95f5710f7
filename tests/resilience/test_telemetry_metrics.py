from __future__ import annotations

import enum
import math
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import telemetry
from resilience.telemetry import Metrics


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(resilience4j=False)


def text(metrics: Metrics) -> str:
    return metrics.render_prometheus().decode()


# -- values ---------------------------------------------------------------------------


def test_counter_increments_by_one_or_by_value(metrics: Metrics) -> None:
    metrics.increment_counter("tasks.completed")
    metrics.increment_counter("tasks.completed")
    metrics.increment_counter("tasks.completed", 2.5)
    assert metrics.snapshot()["counters"] == {"tasks.completed": 4.5}


def test_counter_rejects_negative_increments(metrics: Metrics) -> None:
    metrics.increment_counter("c")
    with pytest.raises(ValueError):
        metrics.increment_counter("c", -1)
    assert metrics.snapshot()["counters"]["c"] == 1


def test_labelled_series_are_separate_and_label_order_does_not_matter(metrics: Metrics) -> None:
    metrics.increment_counter("http.requests", labels={"method": "GET", "code": "200"})
    metrics.increment_counter("http.requests", labels={"code": "200", "method": "GET"})
    metrics.increment_counter("http.requests", labels={"method": "POST", "code": "500"})
    assert metrics.snapshot()["counters"] == {
        'http.requests{code="200",method="GET"}': 2.0,
        'http.requests{code="500",method="POST"}': 1.0,
    }


def test_gauge_keeps_the_last_value(metrics: Metrics) -> None:
    metrics.set_gauge("active_agents", 5)
    metrics.set_gauge("active_agents", 3)
    metrics.set_gauge("queue.depth", 7, labels={"queue": "a"})
    assert metrics.snapshot()["gauges"] == {"active_agents": 3.0, 'queue.depth{queue="a"}': 7.0}


def test_histogram_snapshot_has_count_sum_min_max_and_percentiles(metrics: Metrics) -> None:
    for value in range(100, 0, -1):
        metrics.record_histogram("task_duration_ms", value)
    summary = metrics.snapshot()["histograms"]["task_duration_ms"]
    assert summary == {
        "count": 100,
        "sum": 5050.0,
        "min": 1.0,
        "max": 100.0,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
    }


def test_histogram_percentiles_use_recent_values_but_min_max_count_are_exact() -> None:
    metrics = Metrics(reservoir_size=10, resilience4j=False)
    for value in range(1, 101):
        metrics.record_histogram("latency", value)
    summary = metrics.snapshot()["histograms"]["latency"]
    assert (summary["count"], summary["sum"], summary["min"], summary["max"]) == (
        100,
        5050.0,
        1.0,
        100.0,
    )
    assert (summary["p50"], summary["p95"], summary["p99"]) == (95.0, 100.0, 100.0)


def test_histogram_single_value_and_labels(metrics: Metrics) -> None:
    metrics.record_histogram("lat", 0.25, labels={"route": "/a"})
    summary = metrics.snapshot()["histograms"]['lat{route="/a"}']
    assert summary["p50"] == summary["p99"] == summary["min"] == summary["max"] == 0.25


def test_histogram_rejects_nan_and_non_numbers_without_recording(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="NaN"):
        metrics.record_histogram("h", math.nan)
    with pytest.raises(TypeError):
        metrics.record_histogram("h", "fast")  # type: ignore[arg-type]
    assert metrics.snapshot()["histograms"]["h"]["count"] == 0


def test_reset_forgets_everything_and_frees_names(metrics: Metrics) -> None:
    metrics.increment_counter("x")
    metrics.record_histogram("h", 1)
    metrics.reset()
    assert metrics.snapshot() == {"counters": {}, "gauges": {}, "histograms": {}}
    assert "x_total" not in text(metrics)
    metrics.set_gauge("x", 1)  # a counter before the reset
    metrics.increment_counter("h")
    assert metrics.snapshot()["gauges"] == {"x": 1.0}
    assert metrics.snapshot()["counters"] == {"h": 1.0}


def test_concurrent_increments_are_all_counted(metrics: Metrics) -> None:
    def work() -> None:
        for _ in range(5_000):
            metrics.increment_counter("hits", labels={"worker": "w"})
            metrics.record_histogram("sizes", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = metrics.snapshot()
    assert snap["counters"]['hits{worker="w"}'] == 20_000
    assert snap["histograms"]["sizes"]["count"] == 20_000


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mapped"),
    [
        ("tasks.completed", "tasks_completed"),
        ("workflow.steps-done", "workflow_steps_done"),
        ("plain", "plain"),
        ("_private:x", "_private:x"),
    ],
)
def test_prometheus_name_maps_dots_and_dashes_to_underscores(
    metrics: Metrics, name: str, mapped: str
) -> None:
    assert metrics.prometheus_name(name) == mapped


def test_namespace_prefixes_every_prometheus_name() -> None:
    metrics = Metrics(namespace="orchestrator", resilience4j=False)
    metrics.increment_counter("tasks.completed")
    assert metrics.prometheus_name("tasks.completed") == "orchestrator_tasks_completed"
    assert "orchestrator_tasks_completed_total 1.0" in text(metrics)


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "a b", "a/b", ".dot", "é", "__reserved", "resilience4j.circuitbreaker.state"],
)
def test_invalid_names_raise_value_error(metrics: Metrics, name: str) -> None:
    with pytest.raises(ValueError):
        metrics.increment_counter(name)
    with pytest.raises(ValueError):
        metrics.record_histogram(name, 1)


@pytest.mark.parametrize("name", [None, 5, b"bytes"])
def test_non_string_names_raise_value_error(metrics: Metrics, name: Any) -> None:
    with pytest.raises(ValueError):
        metrics.set_gauge(name, 1)


def test_names_mapping_to_the_same_prometheus_name_clash(metrics: Metrics) -> None:
    metrics.increment_counter("a.b")
    with pytest.raises(ValueError, match="'a.b'"):
        metrics.increment_counter("a_b")
    with pytest.raises(ValueError):
        metrics.set_gauge("a-b", 1)


def test_a_name_reused_with_another_type_raises(metrics: Metrics) -> None:
    metrics.increment_counter("jobs")
    with pytest.raises(ValueError, match="counter"):
        metrics.set_gauge("jobs", 1)
    with pytest.raises(ValueError, match="counter"):
        metrics.record_histogram("jobs", 1)
    metrics.record_histogram("durations", 1)
    with pytest.raises(ValueError, match="histogram"):
        metrics.increment_counter("durations")


def test_a_name_clashing_with_another_collector_in_the_registry_raises() -> None:
    registry = CollectorRegistry()
    Gauge("external", "not ours", registry=registry)
    metrics = Metrics(registry=registry, resilience4j=False)
    with pytest.raises(ValueError):
        metrics.increment_counter("external")
    with pytest.raises(ValueError):
        metrics.record_histogram("external", 1)


# -- labels ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [{"1a": "x"}, {"a-b": "x"}, {"__x": "x"}, {"": "x"}, {1: "x"}])
def test_invalid_label_names_raise_value_error(metrics: Metrics, labels: Any) -> None:
    with pytest.raises(ValueError):
        metrics.increment_counter("c", labels=labels)


@pytest.mark.parametrize("value", [1, True, None, 2.5, ["list"]])
def test_label_values_must_be_strings(metrics: Metrics, value: Any) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        metrics.increment_counter("c", labels={"code": value})


def test_labels_must_be_a_mapping(metrics: Metrics) -> None:
    with pytest.raises(ValueError):
        metrics.increment_counter("c", labels=[("a", "b")])  # type: ignore[arg-type]


def test_histograms_cannot_use_the_le_label(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="'le'"):
        metrics.record_histogram("h", 1, labels={"le": "x"})


def test_label_names_are_fixed_by_first_use(metrics: Metrics) -> None:
    metrics.increment_counter("req", labels={"method": "GET"})
    with pytest.raises(ValueError, match="method"):
        metrics.increment_counter("req", labels={"method": "GET", "code": "200"})
    with pytest.raises(ValueError):
        metrics.increment_counter("req")
    metrics.set_gauge("plain", 1)
    with pytest.raises(ValueError):
        metrics.set_gauge("plain", 1, labels={"a": "b"})
    metrics.increment_counter("req", labels={"method": "PUT"})
    assert set(metrics.snapshot()["counters"]) == {'req{method="GET"}', 'req{method="PUT"}'}


def test_str_enum_label_values_become_their_plain_value(metrics: Metrics) -> None:
    class Method(enum.StrEnum):
        GET = "get"

    metrics.increment_counter("req", labels={"method": Method.GET})
    metrics.increment_counter("req", labels={"method": "get"})
    assert metrics.snapshot()["counters"] == {'req{method="get"}': 2.0}
    assert 'req_total{method="get"} 2.0' in text(metrics)


# -- exposition -----------------------------------------------------------------------


def test_prometheus_text_contains_the_mapped_names_and_parses(metrics: Metrics) -> None:
    metrics.increment_counter("tasks.completed", 3)
    metrics.set_gauge("active-agents", 5, labels={"pool": "gpu"})
    metrics.record_histogram("task.duration", 0.3)
    body = text(metrics)
    assert "tasks_completed_total 3.0" in body
    assert 'active_agents{pool="gpu"} 5.0' in body
    assert 'task_duration_bucket{le="0.5"} 1.0' in body
    assert 'task_duration_bucket{le="0.1"} 0.0' in body
    assert "task_duration_count 1.0" in body
    assert "task_duration_sum 0.3" in body
    families = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert families["tasks_completed"] == "counter"
    assert families["active_agents"] == "gauge"
    assert families["task_duration"] == "histogram"


def test_custom_buckets_are_exposed(metrics: Metrics) -> None:
    custom = Metrics(buckets=(1, 10), resilience4j=False)
    custom.record_histogram("h", 5)
    body = text(custom)
    assert 'h_bucket{le="1.0"} 0.0' in body
    assert 'h_bucket{le="10.0"} 1.0' in body
    assert 'h_bucket{le="+Inf"} 1.0' in body


def test_an_injected_registry_is_the_one_written_to() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry, resilience4j=False)
    metrics.increment_counter("shared")
    assert metrics.registry is registry
    assert registry.get_sample_value("shared_total") == 1.0
    assert b"shared_total 1.0" in generate_latest(registry)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"buckets": ()},
        {"buckets": (2, 1)},
        {"buckets": (1, 1)},
        {"buckets": (math.nan,)},
        {"buckets": ("x",)},
        {"reservoir_size": 0},
        {"namespace": "bad name"},
    ],
)
def test_invalid_constructor_arguments_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Metrics(resilience4j=False, **kwargs)


def test_module_metrics_has_a_private_registry_with_the_resilience4j_collector() -> None:
    assert isinstance(telemetry.metrics, Metrics)
    assert isinstance(telemetry.metrics.collector, telemetry.Resilience4jCollector)
    assert telemetry.metrics.registry is not None
    assert telemetry.PROMETHEUS_CONTENT_TYPE.startswith("text/plain")


def test_snapshot_keys_escape_quotes_and_backslashes_in_label_values(metrics: Metrics) -> None:
    metrics.increment_counter("paths", labels={"path": 'a"b\\c'})
    assert list(metrics.snapshot()["counters"]) == ['paths{path="a\\"b\\\\c"}']
