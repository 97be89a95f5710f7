from __future__ import annotations

import enum
import logging
import sys
import types
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience.registry import Registry
from resilience.telemetry import BREAKER_STATES, Metrics, Resilience4jCollector


class Fake:
    """Anything with a name and a snapshot(), like a breaker or a limiter."""

    def __init__(self, **snapshot: Any) -> None:
        self.name = snapshot["name"]
        self.view = snapshot
        self.reads = 0

    def snapshot(self) -> dict[str, Any]:
        self.reads += 1
        return dict(self.view)


class Broken:
    name = "broken"

    def snapshot(self) -> dict[str, Any]:
        raise RuntimeError("no snapshot today")


def breaker(name: str = "payments", state: Any = "closed", **overrides: Any) -> Fake:
    view: dict[str, Any] = {
        "name": name,
        "state": state,
        "failure_count": 2,
        "failure_rate": 12.5,
        "calls": {"successful": 7, "failed": 2, "rejected": 3, "ignored": 1, "slow": 4},
    }
    view.update(overrides)
    return Fake(**view)


def limiter(name: str = "api", **overrides: Any) -> Fake:
    view: dict[str, Any] = {
        "name": name,
        "kind": "bucket",
        "available_tokens": 8.5,
        "allowed": 40,
        "rejected": 6,
        "capacity": 10,
    }
    view.update(overrides)
    return Fake(**view)


def registry_with(breakers=(), limiters=()) -> CollectorRegistry:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    registry.register(
        Resilience4jCollector(breakers=lambda: list(breakers), limiters=lambda: list(limiters))
    )
    return registry


def test_breaker_state_is_one_hot_over_the_five_resilience4j_states() -> None:
    registry = registry_with(breakers=[breaker(state="half_open")])
    values = {
        state: registry.get_sample_value(
            "resilience4j_circuitbreaker_state", {"name": "payments", "state": state}
        )
        for state in BREAKER_STATES
    }
    assert values == {
        "closed": 0.0,
        "open": 0.0,
        "half_open": 1.0,
        "forced_open": 0.0,
        "disabled": 0.0,
    }


def test_breaker_state_may_be_a_str_enum() -> None:
    class State(enum.StrEnum):
        FORCED_OPEN = "forced_open"

    registry = registry_with(breakers=[breaker(state=State.FORCED_OPEN)])
    assert (
        registry.get_sample_value(
            "resilience4j_circuitbreaker_state", {"name": "payments", "state": "forced_open"}
        )
        == 1.0
    )


def test_breaker_calls_use_resilience4j_kinds() -> None:
    registry = registry_with(breakers=[breaker()])

    def calls(kind: str) -> float | None:
        return registry.get_sample_value(
            "resilience4j_circuitbreaker_calls_total", {"name": "payments", "kind": kind}
        )

    assert [calls(k) for k in ("successful", "failed", "ignored", "not_permitted")] == [
        7.0,
        2.0,
        1.0,
        3.0,
    ]
    assert calls("rejected") is None
    assert (
        registry.get_sample_value(
            "resilience4j_circuitbreaker_not_permitted_calls_total",
            {"name": "payments", "kind": "not_permitted"},
        )
        == 3.0
    )
    assert (
        registry.get_sample_value(
            "resilience4j_circuitbreaker_slow_calls_total", {"name": "payments"}
        )
        == 4.0
    )


@pytest.mark.parametrize(("rate", "published"), [(12.5, 12.5), (0, 0.0), (None, -1.0)])
def test_breaker_failure_rate_is_percent_or_minus_one_when_unknown(
    rate: float | None, published: float
) -> None:
    registry = registry_with(breakers=[breaker(failure_rate=rate)])
    assert (
        registry.get_sample_value("resilience4j_circuitbreaker_failure_rate", {"name": "payments"})
        == published
    )


def test_limiter_publishes_available_permissions_and_call_outcomes() -> None:
    registry = registry_with(limiters=[limiter()])
    assert (
        registry.get_sample_value("resilience4j_ratelimiter_available_permissions", {"name": "api"})
        == 8.5
    )
    outcome = {
        kind: registry.get_sample_value(
            "resilience4j_ratelimiter_calls_total", {"name": "api", "kind": kind}
        )
        for kind in ("successful", "failed")
    }
    assert outcome == {"successful": 40.0, "failed": 6.0}


def test_keyed_limiter_without_available_tokens_has_no_permissions_sample() -> None:
    registry = registry_with(
        limiters=[limiter(name="per_user", kind="keyed", available_tokens=None)]
    )
    assert (
        registry.get_sample_value(
            "resilience4j_ratelimiter_available_permissions", {"name": "per_user"}
        )
        is None
    )
    assert (
        registry.get_sample_value(
            "resilience4j_ratelimiter_calls_total", {"name": "per_user", "kind": "successful"}
        )
        == 40.0
    )


def test_a_failing_snapshot_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="resilience.telemetry._collectors")
    registry = registry_with(breakers=[Broken(), breaker(name="ok")])
    assert (
        registry.get_sample_value(
            "resilience4j_circuitbreaker_state", {"name": "ok", "state": "closed"}
        )
        == 1.0
    )
    assert "broken" in caplog.text


def test_snapshots_with_missing_or_odd_keys_publish_what_they_can() -> None:
    odd = Fake(name="odd", state="open", calls="not a dict", failure_rate="n/a")
    registry = registry_with(breakers=[odd, Fake(nameless=True, name="")])
    body = generate_latest(registry).decode()
    assert 'resilience4j_circuitbreaker_state{name="odd",state="open"} 1.0' in body
    assert 'resilience4j_circuitbreaker_failure_rate{name="odd"} -1.0' in body
    assert "resilience4j_circuitbreaker_calls_total" not in body
    assert 'name=""' not in body


def test_snapshots_are_read_at_scrape_time_only() -> None:
    one = breaker()
    registry = registry_with(breakers=[one])
    assert one.reads == 0
    generate_latest(registry)
    generate_latest(registry)
    assert one.reads == 2


def test_output_is_valid_prometheus_text_with_counter_and_gauge_types() -> None:
    body = generate_latest(registry_with(breakers=[breaker()], limiters=[limiter()])).decode()
    types_by_name = {f.name: f.type for f in text_string_to_metric_families(body)}
    assert types_by_name == {
        "resilience4j_circuitbreaker_state": "gauge",
        "resilience4j_circuitbreaker_calls": "counter",
        "resilience4j_circuitbreaker_not_permitted_calls": "counter",
        "resilience4j_circuitbreaker_slow_calls": "counter",
        "resilience4j_circuitbreaker_failure_rate": "gauge",
        "resilience4j_circuitbreaker_buffered_calls": "gauge",
        "resilience4j_circuitbreaker_max_buffered_calls": "gauge",
        "resilience4j_circuitbreaker_slow_call_rate": "gauge",
        "resilience4j_ratelimiter_available_permissions": "gauge",
        "resilience4j_ratelimiter_waiting_threads": "gauge",
        "resilience4j_ratelimiter_calls": "counter",
    }


def test_default_sources_tolerate_missing_breaker_and_limiter_modules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "resilience.circuit_breaker", None)
    monkeypatch.setitem(sys.modules, "resilience.rate_limiter", None)
    assert list(Resilience4jCollector().collect()) == []


def test_default_sources_read_the_process_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    breakers: Registry[Fake] = Registry("circuit breaker")
    breakers.register("payments", breaker())
    limiters: Registry[Fake] = Registry("rate limiter")
    limiters.register("api", limiter())
    monkeypatch.setitem(
        sys.modules,
        "resilience.circuit_breaker",
        types.SimpleNamespace(circuit_breaker_registry=breakers),
    )
    monkeypatch.setitem(
        sys.modules,
        "resilience.rate_limiter",
        types.SimpleNamespace(rate_limiter_registry=limiters),
    )
    body = Metrics().render_prometheus().decode()
    assert 'resilience4j_circuitbreaker_state{name="payments",state="closed"} 1.0' in body
    assert 'resilience4j_ratelimiter_available_permissions{name="api"} 8.5' in body


def test_a_module_without_its_registry_publishes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "resilience.circuit_breaker", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "resilience.rate_limiter", types.SimpleNamespace())
    assert list(Resilience4jCollector().collect()) == []


def test_user_metrics_cannot_take_resilience4j_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Metrics().set_gauge("resilience4j.ratelimiter.available_permissions", 1)
