from __future__ import annotations

import pytest

from dashboard.live.broadcast import Broadcaster
from dashboard.live.sampler import Sampler
from resilience import telemetry
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry
from resilience.rate_limiter import RateLimitConfig, rate_limiter_registry
from tests.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def sampler(clock: FakeClock) -> Sampler:
    return Sampler(Broadcaster(), clock=clock, keep=3)


def test_limiter_rates_come_from_the_change_since_the_previous_sample(
    sampler: Sampler, clock: FakeClock
) -> None:
    limiter = rate_limiter_registry.get_or_create(
        "api", RateLimitConfig(max_requests=5, time_window=60)
    )
    _, _, rows = sampler.sample()
    assert rows[0]["allowed_rate"] is None
    for _ in range(6):
        limiter.try_acquire()
    clock.now += 2.0
    _, _, rows = sampler.sample()
    assert rows[0]["allowed_rate"] == pytest.approx(2.5)
    assert rows[0]["rejected_rate"] == pytest.approx(0.5)


def test_sample_carries_metrics_and_totals_and_only_the_last_ones_are_kept(
    sampler: Sampler, clock: FakeClock
) -> None:
    telemetry.metrics.increment_counter("sampler.test", 3)
    telemetry.metrics.record_histogram("sampler.latency", 12.0)
    breaker = circuit_breaker_registry.get_or_create("db", CircuitBreakerConfig())
    breaker.call(lambda: None)
    try:
        for _ in range(4):
            sample, _, _ = sampler.sample()
            clock.now += 1
    finally:
        telemetry.metrics.reset()
    assert sample["counters"]["sampler.test"] == 3
    assert sample["histograms"]["sampler.latency"]["p99"] == 12.0
    assert sample["key"]["calls"] == 1
    assert [s["t"] for s in sampler.samples] == [1_700_000_001, 1_700_000_002, 1_700_000_003]


def test_only_breakers_whose_counters_moved_are_reported_changed(sampler: Sampler) -> None:
    quiet = circuit_breaker_registry.get_or_create("quiet", CircuitBreakerConfig())
    busy = circuit_breaker_registry.get_or_create("busy", CircuitBreakerConfig())
    assert sampler.changed_breakers(sampler.sample()[1]) == []
    busy.call(lambda: None)
    assert sampler.changed_breakers(sampler.sample()[1]) == ["busy"]
    assert quiet.state.value == "closed"
    assert sampler.changed_breakers(sampler.sample()[1]) == []
