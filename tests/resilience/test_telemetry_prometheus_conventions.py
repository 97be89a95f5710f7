"""Prometheus conventions of the facade: base units, process collectors, resilience4j names."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker_registry,
)
from resilience.telemetry import Metrics, Resilience4jCollector, register_process_collectors
from resilience.telemetry._units import base_unit
from tests.clock import FakeClock


class Fake:
    def __init__(self, **view: Any) -> None:
        self.name = view["name"]
        self.view = view

    def snapshot(self) -> dict[str, Any]:
        return dict(self.view)


def families(registry: CollectorRegistry) -> dict[str, Any]:
    body = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(body)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("task_duration_ms", ("task_duration_seconds", 1e-3)),
        ("rpc_latency_milliseconds", ("rpc_latency_seconds", 1e-3)),
        ("payload_kb", ("payload_bytes", 1e3)),
        ("task_duration_seconds", ("task_duration_seconds", 1.0)),
        ("ms", ("ms", 1.0)),
        ("items", ("items", 1.0)),
    ],
)
def test_base_unit_maps_abbreviated_units(name: str, expected: tuple[str, float]) -> None:
    assert base_unit(name) == expected


def test_a_histogram_recorded_in_ms_is_exported_in_seconds() -> None:
    metrics = Metrics(resilience4j=False, buckets=(10.0, 100.0, 1000.0))
    metrics.record_histogram("workflow.duration_ms", 250.0)
    metrics.record_histogram("workflow.duration_ms", 50.0)
    registry = metrics.registry
    assert "workflow_duration_seconds" in families(registry)
    assert "workflow_duration_ms" not in families(registry)
    assert registry.get_sample_value("workflow_duration_seconds_sum") == pytest.approx(0.3)
    assert registry.get_sample_value("workflow_duration_seconds_bucket", {"le": "0.1"}) == 1.0
    assert registry.get_sample_value("workflow_duration_seconds_bucket", {"le": "1.0"}) == 2.0
    # The caller's view keeps the caller's unit.
    snap = metrics.snapshot()["histograms"]["workflow.duration_ms"]
    assert (snap["sum"], snap["max"]) == (300.0, 250.0)


def test_a_histogram_in_base_units_is_exported_unchanged() -> None:
    metrics = Metrics(resilience4j=False, buckets=(0.1, 1.0))
    metrics.record_histogram("job.duration_seconds", 0.5)
    assert metrics.registry.get_sample_value("job_duration_seconds_sum") == 0.5


def test_process_and_platform_collectors_are_registered() -> None:
    registry = CollectorRegistry()
    register_process_collectors(registry)
    names = set(families(registry))
    assert {"python_info", "python_gc_objects_collected", "python_gc_collections"} <= names
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names


def test_the_global_metrics_publish_process_collectors() -> None:
    from resilience import telemetry

    body = telemetry.metrics.render_prometheus().decode()
    assert "\nprocess_cpu_seconds_total " in body
    assert "\npython_info{" in body


def collector_with(**kwargs: Any) -> tuple[Resilience4jCollector, CollectorRegistry]:
    collector = Resilience4jCollector(**kwargs)
    registry = CollectorRegistry()
    registry.register(collector)
    return collector, registry


def test_call_durations_are_a_seconds_histogram_by_kind() -> None:
    collector, registry = collector_with(breakers=list, limiters=list)
    collector.observe_call("payments", "successful", 0.02)
    collector.observe_call("payments", "successful", 0.2)
    collector.observe_call("payments", "failed", 3.0)
    family = families(registry)["resilience4j_circuitbreaker_calls_seconds"]
    assert family.type == "histogram"
    labels = {"name": "payments", "kind": "successful"}
    count = registry.get_sample_value("resilience4j_circuitbreaker_calls_seconds_count", labels)
    total = registry.get_sample_value("resilience4j_circuitbreaker_calls_seconds_sum", labels)
    assert (count, total) == (2.0, pytest.approx(0.22))
    bucket = registry.get_sample_value(
        "resilience4j_circuitbreaker_calls_seconds_bucket", {**labels, "le": "0.025"}
    )
    assert bucket == 1.0


def test_observe_call_rejects_unknown_kinds_and_nan() -> None:
    collector, _ = collector_with(breakers=list, limiters=list)
    with pytest.raises(ValueError, match="kind"):
        collector.observe_call("payments", "not_permitted", 0.1)
    with pytest.raises(ValueError, match="NaN"):
        collector.observe_call("payments", "failed", float("nan"))


def test_buffered_calls_come_from_the_sliding_window() -> None:
    clock = FakeClock()
    config = CircuitBreakerConfig(sliding_window_size=10, minimum_calls=5, failure_threshold=50)
    breaker = CircuitBreaker("buffered", config, clock=clock)
    circuit_breaker_registry.remove("buffered")
    breaker.call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    _, registry = collector_with(breakers=lambda: [breaker], limiters=list)
    value = registry.get_sample_value
    assert (
        value(
            "resilience4j_circuitbreaker_buffered_calls", {"name": "buffered", "kind": "successful"}
        )
        == 1.0
    )  # noqa: E501
    assert (
        value("resilience4j_circuitbreaker_buffered_calls", {"name": "buffered", "kind": "failed"})
        == 1.0
    )  # noqa: E501
    assert value("resilience4j_circuitbreaker_max_buffered_calls", {"name": "buffered"}) == 10.0


def test_a_breaker_without_a_window_buffers_nothing() -> None:
    _, registry = collector_with(
        breakers=lambda: [Fake(name="plain", state="closed")], limiters=list
    )
    assert (
        registry.get_sample_value(
            "resilience4j_circuitbreaker_max_buffered_calls", {"name": "plain"}
        )
        == 0.0
    )  # noqa: E501


def test_slow_call_rate_is_a_percentage_or_minus_one() -> None:
    counts = {"successful": 6, "failed": 4, "slow": 2}
    busy = Fake(name="busy", state="closed", calls=counts, config={"minimum_calls": 5})
    idle = Fake(name="idle", state="closed", calls={"successful": 1}, config={"minimum_calls": 5})
    _, registry = collector_with(breakers=lambda: [busy, idle], limiters=list)
    rate = registry.get_sample_value
    assert rate("resilience4j_circuitbreaker_slow_call_rate", {"name": "busy"}) == 20.0
    assert rate("resilience4j_circuitbreaker_slow_call_rate", {"name": "idle"}) == -1.0


def test_limiters_publish_waiting_threads() -> None:
    api = Fake(name="api", available_tokens=3.0, allowed=1, rejected=0, waiting=2)
    _, registry = collector_with(breakers=list, limiters=lambda: [api])
    assert (
        registry.get_sample_value("resilience4j_ratelimiter_waiting_threads", {"name": "api"})
        == 2.0
    )  # noqa: E501


def test_the_application_label_is_on_every_resilience4j_sample() -> None:
    breaker = Fake(name="payments", state="open", calls={"successful": 1})
    api = Fake(name="api", available_tokens=3.0, allowed=1, rejected=0)
    collector, registry = collector_with(
        breakers=lambda: [breaker], limiters=lambda: [api], application="shop"
    )
    collector.observe_call("payments", "successful", 0.1)
    samples = [sample for family in families(registry).values() for sample in family.samples]
    assert samples
    assert all(sample.labels.get("application") == "shop" for sample in samples)


def test_without_an_application_there_is_no_such_label() -> None:
    _, registry = collector_with(breakers=lambda: [Fake(name="b", state="closed")], limiters=list)
    samples = [sample for family in families(registry).values() for sample in family.samples]
    assert samples
    assert all("application" not in sample.labels for sample in samples)


def test_a_keyed_limiter_publishes_its_most_constrained_key() -> None:
    keys = [{"key": "ada", "available_tokens": 2.5}, {"key": "bob", "available_tokens": 0.5}]
    busy = Fake(name="busy", kind="keyed", available_tokens=None, capacity=10, busiest_keys=keys)
    idle = Fake(name="idle", kind="keyed", available_tokens=None, capacity=10, busiest_keys=[])
    _, registry = collector_with(breakers=list, limiters=lambda: [busy, idle])
    value = registry.get_sample_value
    assert value("resilience4j_ratelimiter_available_permissions", {"name": "busy"}) == 0.5
    assert value("resilience4j_ratelimiter_available_permissions", {"name": "idle"}) == 10.0
