from __future__ import annotations

import threading

import pytest
from django.test import override_settings

from dashboard.alerts import runner
from dashboard.alerts.engine import EvaluationReport
from dashboard.alerts.models import AlertRule, NotificationChannel
from dashboard.runtime import Features


@override_settings(ALERTS_ENABLED=True)
def test_the_server_runtime_starts_the_evaluator_when_alerts_are_enabled() -> None:
    assert Features.from_settings().alerts is True


@override_settings(ALERTS_ENABLED=True)
def test_a_worker_runtime_never_starts_the_evaluator() -> None:
    assert Features.from_settings(serving=False).alerts is False


def test_the_test_settings_keep_the_evaluator_off() -> None:
    assert Features.from_settings().alerts is False


@override_settings(ALERTS_ENABLED=False)
def test_alerts_enabled_false_keeps_the_evaluator_off() -> None:
    assert Features.from_settings().alerts is False


@override_settings(ALERTS_INTERVAL="0.5")
def test_interval_comes_from_settings() -> None:
    assert runner.interval() == 0.5


class FakeEngine:
    def __init__(self, fail_first: bool = False) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.called = threading.Event()

    def evaluate_all(self) -> EvaluationReport:
        self.calls += 1
        if self.fail_first and self.calls == 1:
            raise RuntimeError("database is away")
        self.called.set()
        return EvaluationReport(rules=1)


class IdleNotifier:
    def shutdown(self, timeout: float = 0) -> None:
        pass


def test_runner_thread_keeps_evaluating_after_a_failed_pass() -> None:
    engine = FakeEngine(fail_first=True)
    background = runner.Runner(engine=engine, notifier=IdleNotifier(), interval=0.01)  # type: ignore[arg-type]
    assert background.start()
    try:
        assert not background.start()  # already running in this process
        assert engine.called.wait(5)
    finally:
        background.stop()

    assert background.failures == 1
    assert background.last_report is not None
    assert not background.running


@pytest.mark.django_db
@override_settings(RESILIENCE_DEMO=True)
def test_the_first_pass_of_a_demo_server_seeds_the_demo_rules_then_passes_count_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "close_old_connections", lambda: None)  # the test's transaction
    engine = FakeEngine(fail_first=True)
    background = runner.Runner(engine=engine, notifier=IdleNotifier(), interval=60)  # type: ignore[arg-type]
    background.start()  # reads RESILIENCE_DEMO; the first pass is a minute away
    background.stop()
    assert not AlertRule.objects.exists()
    with pytest.raises(RuntimeError, match="database is away"):
        background.tick()
    assert AlertRule.objects.count() == 2 and background.failures == 1
    AlertRule.objects.all().delete()
    background.tick()
    assert not AlertRule.objects.exists()  # seeded once only
    assert background.failures == 1 and background.last_report == EvaluationReport(rules=1)
    assert background.interval == 60


@pytest.mark.django_db
def test_demo_rules_are_created_once_and_notify_the_banner() -> None:
    runner.ensure_demo_rules()
    rule = AlertRule.objects.get(name="Circuit breaker open")
    rule.severity = "info"  # an operator's edit survives a restart
    rule.save()

    runner.ensure_demo_rules()

    assert AlertRule.objects.count() == 2
    assert AlertRule.objects.get(name="Circuit breaker open").severity == "info"
    banner = NotificationChannel.objects.get(kind="banner")
    assert list(rule.channels.all()) == [banner]
