from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboard.alerts import sources
from dashboard.alerts.engine import Engine
from dashboard.alerts.models import Alert, AlertRule, RuleKind
from dashboard.traces.models import SpanRecord, SpanStatus
from resilience import telemetry
from resilience.errors import CheckpointCorruptedError
from resilience.rate_limiter import RateLimitConfig, RateLimiter
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0
_unique = itertools.count()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(clock=clock)


def rule(kind: str, **parameters: Any) -> AlertRule:
    return AlertRule.objects.create(
        name=f"rule-{next(_unique)}", kind=kind, parameters=parameters, cooldown_seconds=0
    )


def metric_name(prefix: str) -> str:
    return f"alerts_test.{prefix}_{next(_unique)}"


def test_limiter_rejections_per_minute_fire_above_the_threshold(
    engine: Engine, clock: FakeClock
) -> None:
    limiter_clock = FakeClock(0.0)
    limiter = RateLimiter(
        RateLimitConfig(max_requests=1, time_window=3600), name="api", clock=limiter_clock
    )
    rule(RuleKind.LIMITER_REJECTIONS, limiter="api", threshold=10)
    engine.evaluate_all()  # first sample: no rate yet
    for _ in range(6):
        limiter.try_acquire()  # 1 allowed, 5 rejected
    clock.now += 30
    engine.evaluate_all()  # 5 per 30 s = 10/min: not above 10
    assert not Alert.objects.exists()

    for _ in range(2):
        limiter.try_acquire()
    clock.now += 15
    engine.evaluate_all()  # 7 per 45 s = 9.3/min
    assert not Alert.objects.exists()

    for _ in range(20):
        limiter.try_acquire()
    clock.now += 15
    engine.evaluate_all()  # 27 per 60 s

    alert = Alert.objects.get()
    assert alert.subject == "api"
    assert alert.value == pytest.approx(27.0)
    assert "27.0/min" in alert.message


def test_gauge_threshold_fires_and_resolves(engine: Engine, clock: FakeClock) -> None:
    name = metric_name("queue_depth")
    telemetry.metrics.set_gauge(name, 50)
    rule(RuleKind.METRIC_THRESHOLD, metric=name, op=">=", threshold=100)
    engine.evaluate_all()
    assert not Alert.objects.exists()

    telemetry.metrics.set_gauge(name, 120)
    engine.evaluate_all()
    assert Alert.objects.get().value == 120

    telemetry.metrics.set_gauge(name, 80)
    engine.evaluate_all()
    assert Alert.objects.get().state == Alert.State.RESOLVED


def test_histogram_p99_threshold_uses_the_percentile(engine: Engine) -> None:
    name = metric_name("latency_ms")
    for value in [10.0] * 98 + [900.0, 900.0]:
        telemetry.metrics.record_histogram(name, value)
    rule(RuleKind.METRIC_THRESHOLD, metric=name, aggregate="p95", threshold=500)
    rule(RuleKind.METRIC_THRESHOLD, metric=name, aggregate="p99", threshold=500)

    engine.evaluate_all()

    alert = Alert.objects.get()
    assert alert.value == 900
    assert alert.rule.parameters["aggregate"] == "p99"


def test_histogram_mean_is_sum_over_count(engine: Engine) -> None:
    name = metric_name("payload_kb")
    for value in (10.0, 20.0, 60.0):
        telemetry.metrics.record_histogram(name, value)
    rule(RuleKind.METRIC_THRESHOLD, metric=name, aggregate="mean", threshold=25)

    engine.evaluate_all()

    assert Alert.objects.get().value == pytest.approx(30.0)


def test_counter_rate_is_per_second_over_the_window(engine: Engine, clock: FakeClock) -> None:
    name = metric_name("errors")
    telemetry.metrics.increment_counter(name)
    rule(RuleKind.METRIC_THRESHOLD, metric=name, threshold=1.5, window=60)
    engine.evaluate_all()
    telemetry.metrics.increment_counter(name, 100)
    clock.now += 50

    engine.evaluate_all()

    assert Alert.objects.get().value == pytest.approx(2.0)


def test_labelled_series_of_one_metric_are_separate_subjects(engine: Engine) -> None:
    name = metric_name("pool_size")
    telemetry.metrics.set_gauge(name, 9, labels={"pool": "gpu"})
    telemetry.metrics.set_gauge(name, 1, labels={"pool": "cpu"})
    rule(RuleKind.METRIC_THRESHOLD, metric=name, threshold=5)

    engine.evaluate_all()

    assert Alert.objects.get().subject == f'{name}{{pool="gpu"}}'


def test_an_aggregate_that_does_not_fit_the_metric_is_a_rule_error(engine: Engine) -> None:
    name = metric_name("depth")
    telemetry.metrics.set_gauge(name, 1)
    bad = rule(RuleKind.METRIC_THRESHOLD, metric=name, aggregate="p99", threshold=5)

    engine.evaluate_all()

    bad.refresh_from_db()
    assert "does not apply to the gauge" in bad.last_error


def add_spans(now: datetime, *, service: str, name: str, ok: int, errors: int) -> None:
    rows = []
    for index in range(ok + errors):
        rows.append(
            SpanRecord(
                trace_id=f"{index:032x}",
                span_id=f"{index + 1:016x}",
                name=name,
                service=service,
                start=now - timedelta(seconds=30),
                end=now - timedelta(seconds=29),
                duration_us=1_000_000,
                status=SpanStatus.ERROR if index < errors else SpanStatus.OK,
            )
        )
    SpanRecord.objects.bulk_create(rows)


def test_span_error_rate_of_a_service_fires_above_the_percentage(engine: Engine) -> None:
    now = datetime.fromtimestamp(T0, tz=UTC)
    add_spans(now, service="checkout", name="charge", ok=7, errors=3)
    add_spans(now, service="search", name="query", ok=0, errors=10)
    rule(RuleKind.SPAN_ERROR_RATE, service="checkout", threshold=25, window=60, min_spans=5)
    rule(RuleKind.SPAN_ERROR_RATE, service="checkout", threshold=40, window=60)

    engine.evaluate_all()

    alert = Alert.objects.get()
    assert alert.subject == "checkout"
    assert alert.value == pytest.approx(30.0)
    assert "3 of 10 spans failed" in alert.message


def test_span_error_rate_ignores_spans_outside_the_window_and_too_few_spans(
    engine: Engine,
) -> None:
    now = datetime.fromtimestamp(T0, tz=UTC)
    add_spans(now - timedelta(hours=1), service="checkout", name="charge", ok=0, errors=10)
    add_spans(now, service="checkout", name="refund", ok=0, errors=2)
    rule(RuleKind.SPAN_ERROR_RATE, span="charge", threshold=10, window=300)
    rule(RuleKind.SPAN_ERROR_RATE, span="refund", threshold=10, window=300, min_spans=3)

    engine.evaluate_all()

    assert not Alert.objects.exists()


def test_span_drops_fire_when_the_processor_drops_spans(
    engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.traces import tracing

    dropped = {"value": 4}
    monkeypatch.setattr(
        tracing,
        "stats",
        lambda: {"queued": 0, "dropped": dropped["value"], "written": 0, "failed": 0},
    )
    rule(RuleKind.SPAN_DROPS, window=120)
    engine.evaluate_all()  # drops before the first look are history
    assert not Alert.objects.exists()

    dropped["value"] = 9
    clock.now += 10
    engine.evaluate_all()
    assert Alert.objects.get().value == 5

    clock.now += 200  # no new drops for longer than the window
    engine.evaluate_all()
    assert Alert.objects.get().state == Alert.State.RESOLVED


def test_checkpoint_verification_failures_reported_by_the_checkpoint_code_fire(
    engine: Engine, clock: FakeClock
) -> None:
    rule(RuleKind.CHECKPOINT_FAILURES, threshold=1)
    engine.evaluate_all()
    sources.report_checkpoint_verification_failure()
    clock.now += 5
    engine.evaluate_all()
    assert not Alert.objects.exists()  # 1 is not above 1

    sources.report_checkpoint_verification_failure()
    clock.now += 5
    engine.evaluate_all()

    alert = Alert.objects.get()
    assert alert.value == 2
    assert alert.subject == "checkpoint verification failures"


def test_a_corrupted_checkpoint_loaded_anywhere_counts_as_a_verification_failure(
    tmp_path: Path,
) -> None:
    from resilience.checkpoint import StateCheckpointManager

    manager = StateCheckpointManager(tmp_path)
    checkpoint_id = manager.save_checkpoint({"n": 1}, "a", "w")
    [blob] = [p for p in tmp_path.rglob("*") if checkpoint_id in p.name and p.is_file()]
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    before = sources.checkpoint_verification_failures()
    with pytest.raises(CheckpointCorruptedError):
        manager.load_checkpoint(checkpoint_id)
    assert sources.checkpoint_verification_failures() == before + 1
    manager.close()


@pytest.mark.parametrize(
    ("kind", "parameters"),
    [
        (RuleKind.BREAKER_OPEN, {"states": ["closed"]}),
        (RuleKind.BREAKER_OPEN, {"states": []}),
        (RuleKind.METRIC_THRESHOLD, {"metric": "m", "threshold": float("nan")}),
        (RuleKind.METRIC_THRESHOLD, {"metric": "m", "threshold": 1, "op": "=="}),
        (RuleKind.METRIC_THRESHOLD, {"metric": "m", "threshold": True}),
        (RuleKind.SPAN_ERROR_RATE, {"threshold": 101}),
        (RuleKind.SPAN_ERROR_RATE, {"threshold": 5, "window": 0}),
        (RuleKind.SPAN_DROPS, {"threshold": -1}),
    ],
)
def test_parse_parameters_rejects_bad_values_naming_the_parameter(
    kind: str, parameters: dict[str, Any]
) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        sources.parse_parameters(kind, parameters)
    assert any(key in str(raised.value) for key in parameters)


def test_sample_memory_starts_over_when_a_counter_goes_down() -> None:
    memory = sources.SampleMemory()
    assert memory.increase(("k",), 10, 0, 60) is None
    assert memory.increase(("k",), 15, 10, 60) == (5, 10)
    assert memory.increase(("k",), 2, 20, 60) is None  # re-created: new baseline
    assert memory.increase(("k",), 4, 30, 60) == (2, 10)


def test_sample_memory_keeps_a_baseline_at_the_start_of_the_window() -> None:
    memory = sources.SampleMemory()
    for second, value in [(0, 0), (30, 3), (60, 6), (90, 9)]:
        result = memory.increase(("k",), value, second, 60)
    assert result == (6, 60)
