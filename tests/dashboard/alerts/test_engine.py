from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dashboard.alerts.engine import Engine
from dashboard.alerts.models import Alert, AlertRule, RuleKind
from resilience.circuit_breaker import CircuitBreaker
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def sent() -> list[tuple[int, str]]:
    return []


@pytest.fixture
def engine(clock: FakeClock, sent: list[tuple[int, str]]) -> Engine:
    return Engine(clock=clock, notify=lambda alert, event: sent.append((alert.pk, event)))


def breaker_rule(**overrides: Any) -> AlertRule:
    values: dict[str, Any] = {
        "name": "payments open",
        "kind": RuleKind.BREAKER_OPEN,
        "parameters": {"breaker": "payments"},
        "for_seconds": 0,
        "cooldown_seconds": 0,
    }
    values.update(overrides)
    return AlertRule.objects.create(**values)


def test_alert_fires_only_once_the_condition_held_for_the_for_duration(
    engine: Engine, clock: FakeClock, sent: list[tuple[int, str]]
) -> None:
    breaker_rule(for_seconds=30)
    CircuitBreaker("payments").force_open()

    engine.evaluate_all()
    clock.advance(29)
    engine.evaluate_all()
    assert not Alert.objects.exists()

    clock.advance(1)
    report = engine.evaluate_all()

    alert = Alert.objects.get()
    assert report.fired == [alert]
    assert alert.state == Alert.State.FIRING
    assert alert.subject == "payments"
    assert alert.started_at == datetime.fromtimestamp(T0 + 30, tz=UTC)
    assert "forced_open" in alert.message
    assert sent == [(alert.pk, "firing")]


def test_a_blip_shorter_than_the_for_duration_never_fires(
    engine: Engine, clock: FakeClock, sent: list[tuple[int, str]]
) -> None:
    breaker_rule(for_seconds=30)
    breaker = CircuitBreaker("payments")
    breaker.force_open()
    engine.evaluate_all()
    breaker.reset()
    clock.advance(10)
    engine.evaluate_all()
    breaker.force_open()
    clock.advance(25)  # 35 s after the first sighting, but only 0 s into the second
    engine.evaluate_all()

    assert not Alert.objects.exists()
    assert sent == []


def test_a_firing_alert_is_deduplicated_while_the_condition_holds(
    engine: Engine, clock: FakeClock, sent: list[tuple[int, str]]
) -> None:
    breaker_rule()
    CircuitBreaker("payments").force_open()
    for _ in range(5):
        engine.evaluate_all()
        clock.advance(10)

    alert = Alert.objects.get()
    assert alert.state == Alert.State.FIRING
    assert alert.value == 0
    assert alert.last_value == 40  # seconds open at the last look
    assert sent == [(alert.pk, "firing")]


def test_alert_resolves_and_notifies_when_the_condition_clears(
    engine: Engine, clock: FakeClock, sent: list[tuple[int, str]]
) -> None:
    breaker_rule()
    breaker = CircuitBreaker("payments")
    breaker.force_open()
    engine.evaluate_all()
    breaker.reset()
    clock.advance(12)
    report = engine.evaluate_all()

    alert = Alert.objects.get()
    assert report.resolved == [alert]
    assert alert.state == Alert.State.RESOLVED
    assert alert.ended_at == datetime.fromtimestamp(T0 + 12, tz=UTC)
    assert "resolved: breaker payments is closed" in alert.message
    assert sent == [(alert.pk, "firing"), (alert.pk, "resolved")]


def test_cooldown_holds_back_a_new_alert_until_it_has_passed(
    engine: Engine, clock: FakeClock, sent: list[tuple[int, str]]
) -> None:
    breaker_rule(cooldown_seconds=300)
    breaker = CircuitBreaker("payments")
    breaker.force_open()
    engine.evaluate_all()  # fires at T0
    breaker.reset()
    clock.advance(10)
    engine.evaluate_all()  # resolves
    breaker.force_open()
    clock.advance(10)
    engine.evaluate_all()
    clock.advance(279)
    engine.evaluate_all()
    assert Alert.objects.count() == 1

    clock.advance(1)  # 300 s after the first alert fired
    engine.evaluate_all()

    assert Alert.objects.count() == 2
    assert Alert.objects.filter(state=Alert.State.FIRING).count() == 1
    assert [event for _, event in sent] == ["firing", "resolved", "firing"]


def test_each_breaker_matching_the_pattern_is_its_own_subject(engine: Engine) -> None:
    breaker_rule(parameters={"breaker": "svc.*", "exclude": "svc.internal*"})
    CircuitBreaker("svc.a").force_open()
    CircuitBreaker("svc.b").force_open()
    CircuitBreaker("svc.internal-1").force_open()
    CircuitBreaker("other").force_open()

    engine.evaluate_all()

    assert sorted(Alert.objects.values_list("subject", flat=True)) == ["svc.a", "svc.b"]


def test_a_breaker_that_opened_and_closed_between_two_looks_still_fires(
    engine: Engine, clock: FakeClock
) -> None:
    breaker_rule()
    breaker = CircuitBreaker("payments")
    engine.evaluate_all()
    breaker.force_open()
    breaker.reset()
    clock.advance(5)

    engine.evaluate_all()

    alert = Alert.objects.get()
    assert "opened" in alert.message


def test_half_open_counts_as_still_open_unless_excluded(engine: Engine, clock: FakeClock) -> None:
    breaker_rule(parameters={"breaker": "payments", "states": ["open"]})
    CircuitBreaker("payments").force_open()  # forced_open is not in the rule's states

    engine.evaluate_all()

    assert not Alert.objects.exists()


def test_alert_resolves_when_its_subject_disappears(engine: Engine, clock: FakeClock) -> None:
    from resilience.circuit_breaker import circuit_breaker_registry

    breaker_rule()
    CircuitBreaker("payments").force_open()
    engine.evaluate_all()
    circuit_breaker_registry.remove("payments")
    clock.advance(1)
    engine.evaluate_all()

    alert = Alert.objects.get()
    assert alert.state == Alert.State.RESOLVED
    assert "no longer observed" in alert.message


def test_disabling_a_rule_resolves_its_firing_alerts(
    engine: Engine, sent: list[tuple[int, str]]
) -> None:
    rule = breaker_rule()
    CircuitBreaker("payments").force_open()
    engine.evaluate_all()
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)

    engine.evaluate_all()

    assert Alert.objects.get().state == Alert.State.RESOLVED
    assert [event for _, event in sent] == ["firing", "resolved"]


@pytest.mark.parametrize(
    ("kind", "parameters", "error"),
    [
        (RuleKind.METRIC_THRESHOLD, {"metric": "no.such.metric", "threshold": 1}, "unknown metric"),
        (RuleKind.METRIC_THRESHOLD, {"metric": "x", "threshold": "high"}, "threshold must be"),
        (RuleKind.LIMITER_REJECTIONS, {"threshold": -1}, "threshold must be >= 0"),
        (RuleKind.LIMITER_REJECTIONS, {}, "need the parameter 'threshold'"),
        (RuleKind.BREAKER_OPEN, {"breaker": "x", "colour": "red"}, "unknown parameter 'colour'"),
        ("no_such_kind", {}, "unknown rule kind"),
    ],
)
def test_a_rule_that_cannot_be_evaluated_shows_its_error_and_others_still_run(
    engine: Engine, kind: str, parameters: dict[str, Any], error: str
) -> None:
    bad = AlertRule.objects.create(name="bad", kind=kind, parameters=parameters)
    breaker_rule(name="good")
    CircuitBreaker("payments").force_open()

    report = engine.evaluate_all()

    bad.refresh_from_db()
    assert error in bad.last_error
    assert bad.last_evaluated_at is not None
    assert report.errors == 1
    assert Alert.objects.get().rule.name == "good"


def test_fixing_a_bad_rule_clears_its_error(engine: Engine) -> None:
    rule = AlertRule.objects.create(
        name="bad", kind=RuleKind.BREAKER_OPEN, parameters={"breaker": ""}
    )
    engine.evaluate_all()
    rule.refresh_from_db()
    assert "breaker must not be empty" in rule.last_error

    AlertRule.objects.filter(pk=rule.pk).update(parameters={"breaker": "*"})
    engine.evaluate_all()

    rule.refresh_from_db()
    assert rule.last_error == ""


def test_a_failing_notifier_does_not_stop_the_evaluation(clock: FakeClock) -> None:
    def explode(alert: Alert, event: str) -> None:
        raise RuntimeError("mail server on fire")

    breaker_rule(parameters={"breaker": "*"})
    CircuitBreaker("a").force_open()
    CircuitBreaker("b").force_open()

    report = Engine(clock=clock, notify=explode).evaluate_all()

    assert len(report.fired) == 2
    assert Alert.objects.count() == 2
