"""Fake external services: failure patterns over (fake) time, configuration, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from dashboard.workflows import simulated
from dashboard.workflows.simulated import (
    DEFAULT_PATTERNS,
    Pattern,
    ServiceError,
    ServiceUnavailable,
    ServiceWorld,
    load_patterns,
    preset,
)
from resilience.errors import ConfigTypeError, ConfigValueError
from tests.dashboard.conftest import FakeClock


def _world(clock: FakeClock, **patterns: Pattern) -> ServiceWorld:
    return ServiceWorld(patterns, clock=clock, sleep=clock.advance, seed=3)


def _outcomes(world: ServiceWorld, name: str, calls: int) -> list[bool]:
    results = []
    for _ in range(calls):
        try:
            world.call(name, "op")
            results.append(True)
        except ServiceError:
            results.append(False)
    return results


def test_a_healthy_service_answers_after_its_latency(clock: FakeClock) -> None:
    world = _world(clock, llm=Pattern(latency_ms=120.0))
    start = clock()
    answer = world.call("llm", "complete")
    assert answer == {"service": "llm", "operation": "complete", "latency_ms": 120.0}
    assert clock() - start == pytest.approx(0.12)


def test_a_flaky_service_fails_about_as_often_as_its_failure_rate(clock: FakeClock) -> None:
    world = _world(clock, search=Pattern(mode="flaky", latency_ms=1.0, failure_rate=0.3))
    failures = _outcomes(world, "search", 1000).count(False)
    assert 230 < failures < 370
    assert world.snapshot()[0]["failures"] == failures


def test_a_slow_service_takes_slow_ms_per_call(clock: FakeClock) -> None:
    world = _world(clock, llm=Pattern(mode="slow", slow_ms=1500.0))
    start = clock()
    world.call("llm", "complete")
    assert clock() - start == pytest.approx(1.5)


def test_down_for_a_period_then_back_to_the_configured_pattern(clock: FakeClock) -> None:
    world = _world(clock, payments=Pattern(latency_ms=1.0))
    world.set_pattern("payments", Pattern(mode="down", latency_ms=1.0, down_for_s=30.0))
    with pytest.raises(ServiceUnavailable, match="payments: authorise failed: service unavailable"):
        world.call("payments", "authorise")
    assert world.snapshot()[0]["down_remaining_s"] == pytest.approx(30.0 - 0.001)
    clock.advance(30.0)
    assert world.call("payments", "authorise")["service"] == "payments"
    assert not world.snapshot()[0]["down_now"]


def test_down_without_a_period_lasts_until_restored(clock: FakeClock) -> None:
    world = _world(clock, payments=Pattern(latency_ms=1.0))
    previous = world.set_pattern("payments", Pattern(mode="down"))
    assert previous == Pattern(latency_ms=1.0)
    clock.advance(3600)
    assert _outcomes(world, "payments", 3) == [False, False, False]
    world.restore("payments")
    assert _outcomes(world, "payments", 3) == [True, True, True]


def test_a_periodic_outage_is_down_for_outage_s_of_every_period(clock: FakeClock) -> None:
    world = _world(
        clock,
        payments=Pattern(mode="outage", latency_ms=0.0, period_s=40, outage_s=8, offset_s=5),
    )

    def down_at(second: float) -> bool:
        clock.now = world.started + second
        return bool(world.snapshot()[0]["down_now"])

    assert [down_at(s) for s in (0, 4.9, 5, 12.9, 13, 44.9, 45, 52.9, 53)] == [
        False,
        False,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]


def test_the_default_patterns_open_the_payment_breaker_within_30_seconds() -> None:
    payments = DEFAULT_PATTERNS["payments"]
    assert payments.mode == "outage"
    assert payments.offset_s + payments.outage_s < 30  # first outage over by then


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "broken"}, "mode must be one of"),
        ({"latency_ms": -1}, "latency_ms must be >= 0"),
        ({"failure_rate": 1.5}, "failure_rate must be <= 1"),
        ({"mode": "flaky"}, "flaky pattern needs failure_rate > 0"),
        ({"jitter_ms": 80, "latency_ms": 50}, "jitter_ms must be <= latency_ms"),
        ({"down_for_s": 0}, "down_for_s must be > 0"),
        ({"outage_s": 50, "period_s": 40}, "outage_s must be <= period_s"),
    ],
)
def test_invalid_patterns_are_refused_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigValueError, match=message):
        Pattern(**kwargs)  # type: ignore[arg-type]


def test_wrong_types_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ConfigTypeError, match="latency_ms must be a number"):
        Pattern(latency_ms="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigValueError, match="unknown pattern field"):
        Pattern.from_dict({"mode": "healthy", "latncy_ms": 5})


def test_unknown_services_are_refused(clock: FakeClock) -> None:
    world = _world(clock, llm=Pattern())
    with pytest.raises(ConfigValueError, match="service must be one of llm"):
        world.call("ghost", "op")


def test_a_preset_keeps_the_services_latency() -> None:
    chosen = preset("down-30s", Pattern(latency_ms=70.0, jitter_ms=10.0))
    assert (chosen.mode, chosen.down_for_s, chosen.latency_ms, chosen.jitter_ms) == (
        "down",
        30.0,
        70.0,
        10.0,
    )
    with pytest.raises(ConfigValueError, match="preset must be one of"):
        preset("explode", Pattern())


def test_patterns_are_read_from_a_json_file_then_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "simulated.json"
    path.write_text(json.dumps({"payments": {"mode": "down"}, "llm": {"latency_ms": 5}}))
    with override_settings(
        WORKFLOW_SERVICES_FILE=str(path), WORKFLOW_SERVICES={"llm": {"mode": "slow"}}
    ):
        patterns = load_patterns()
    assert patterns["payments"] == Pattern(mode="down")
    assert patterns["llm"] == Pattern(mode="slow")
    assert patterns["search-api"] == DEFAULT_PATTERNS["search-api"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"ghost": {}}, "unknown service 'ghost'"),
        ({"llm": {"mode": "sideways"}}, "llm: mode must be one of"),
        ([], "must be a mapping"),
    ],
)
def test_bad_configuration_is_improperly_configured(setting: object, message: str) -> None:
    with (
        override_settings(WORKFLOW_SERVICES=setting),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        load_patterns()


def test_an_unreadable_file_is_improperly_configured(tmp_path: Path) -> None:
    with (
        override_settings(WORKFLOW_SERVICES_FILE=str(tmp_path / "missing.json")),
        pytest.raises(ImproperlyConfigured, match="WORKFLOW_SERVICES_FILE"),
    ):
        load_patterns()


def test_the_process_world_is_built_once_and_can_be_replaced(clock: FakeClock) -> None:
    previous = simulated.install(None)
    try:
        first = simulated.world()
        assert simulated.world() is first
        assert first.names() == list(DEFAULT_PATTERNS)
        replacement = _world(clock, llm=Pattern())
        simulated.install(replacement)
        assert simulated.world() is replacement
    finally:
        simulated.install(previous)
