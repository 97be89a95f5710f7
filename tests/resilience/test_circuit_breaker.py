"""The breaker's state machine: transitions, rules, concurrency. Fake clocks only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker_registry,
)
from resilience.errors import CircuitOpenError
from resilience.events import BreakerStateChanged, Event
from tests.clock import FakeClock


@pytest.fixture(autouse=True)
def _forget_new_breakers() -> Iterator[None]:
    before = set(circuit_breaker_registry.names())
    yield
    for name in set(circuit_breaker_registry.names()) - before:
        circuit_breaker_registry.remove(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


def make(clock: FakeClock, name: str = "svc", **config: Any) -> CircuitBreaker:
    return CircuitBreaker(name, CircuitBreakerConfig(**config), clock=clock, wall_clock=clock.wall)


def ok() -> str:
    return "ok"


def boom() -> None:
    raise ConnectionError("down")


def fail_times(breaker: CircuitBreaker, times: int, exc: type[Exception] = ConnectionError) -> None:
    def raiser() -> None:
        raise exc("down")

    for _ in range(times):
        with pytest.raises(exc):
            breaker.call(raiser)


def current(breaker: CircuitBreaker) -> CircuitState:
    # A function, not the property, so mypy does not narrow the state between asserts.
    return breaker.state


def transitions(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in events if isinstance(e, BreakerStateChanged)]


def test_breaker_opens_when_consecutive_failures_reach_failure_threshold(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3)
    fail_times(breaker, 2)
    assert current(breaker) is CircuitState.CLOSED
    fail_times(breaker, 1)
    assert current(breaker) is CircuitState.OPEN


def test_success_resets_the_consecutive_failure_count(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3)
    fail_times(breaker, 2)
    assert breaker.call(ok) == "ok"
    fail_times(breaker, 2)
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["failure_count"] == 2


def test_open_breaker_rejects_without_calling_and_reports_remaining(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=30)
    fail_times(breaker, 1)
    clock.advance(10)
    called: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(called.append, 1)
    assert called == []
    assert info.value.name == "svc"
    assert info.value.remaining == pytest.approx(20)
    assert "svc" in str(info.value)


def test_open_goes_half_open_lazily_when_state_is_read_after_timeout(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=30)
    events: list[Event] = []
    breaker.add_listener(events.append)
    fail_times(breaker, 1)
    clock.advance(29.9)
    assert current(breaker) is CircuitState.OPEN
    clock.advance(0.1)
    assert transitions(events) == [("closed", "open")]  # nothing happens until a read
    assert current(breaker) is CircuitState.HALF_OPEN
    assert transitions(events) == [("closed", "open"), ("open", "half_open")]
    assert isinstance(events[-1], BreakerStateChanged)
    assert events[-1].reason == "timeout elapsed (30s open)"


def test_open_goes_half_open_on_the_first_call_after_timeout(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=30, success_threshold=1)
    fail_times(breaker, 1)
    clock.advance(30)
    assert breaker.call(ok) == "ok"
    assert current(breaker) is CircuitState.CLOSED


def test_timeout_zero_lets_the_next_call_through_as_a_trial(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=0, success_threshold=2)
    fail_times(breaker, 1)
    assert breaker.call(ok) == "ok"
    assert current(breaker) is CircuitState.HALF_OPEN


def test_half_open_closes_after_success_threshold_successes(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=5, success_threshold=3)
    events: list[Event] = []
    breaker.add_listener(events.append)
    fail_times(breaker, 1)
    clock.advance(5)
    breaker.call(ok)
    breaker.call(ok)
    assert current(breaker) is CircuitState.HALF_OPEN
    assert breaker.snapshot()["success_count"] == 2
    breaker.call(ok)
    assert current(breaker) is CircuitState.CLOSED
    assert isinstance(events[-1], BreakerStateChanged)
    assert events[-1].reason == "success_threshold reached (3 successful trial calls)"


def test_half_open_reopens_on_a_failed_trial_for_a_full_timeout(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=5, success_threshold=3)
    fail_times(breaker, 1)
    clock.advance(5)
    breaker.call(ok)
    fail_times(breaker, 1)
    assert current(breaker) is CircuitState.OPEN
    assert breaker.snapshot()["seconds_until_half_open"] == pytest.approx(5)


def test_half_open_rejects_calls_beyond_max_trials_with_remaining_zero(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=1, half_open_max_calls=1)
    fail_times(breaker, 1)
    clock.advance(1)
    inner: list[CircuitOpenError] = []

    def trial() -> str:
        try:
            breaker.call(ok)  # a second trial while the first one is still running
        except CircuitOpenError as exc:
            inner.append(exc)
        return "trial"

    assert breaker.call(trial) == "trial"
    assert [e.remaining for e in inner] == [0]
    assert breaker.snapshot()["calls"]["rejected"] == 1


def test_half_open_admits_at_most_max_trials_across_threads(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=1, half_open_max_calls=3)
    fail_times(breaker, 1)
    clock.advance(1)
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    outcomes: list[str] = []

    def trial() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1

    def worker() -> None:
        try:
            breaker.call(trial)
            outcome = "ran"
        except CircuitOpenError:
            outcome = "rejected"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for _ in range(500):  # wait for every thread to be admitted or rejected
        with lock:
            if running + len(outcomes) == 12:
                break
        release.wait(0.01)
    snapshot = breaker.snapshot()
    release.set()
    for thread in threads:
        thread.join(5)
    assert snapshot["half_open_calls_in_flight"] == 3
    assert peak == 3
    assert sorted(outcomes) == ["ran"] * 3 + ["rejected"] * 9


def test_base_exception_is_not_a_failure_but_frees_its_trial_slot(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=1, half_open_max_calls=1)
    fail_times(breaker, 1)
    clock.advance(1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert current(breaker) is CircuitState.HALF_OPEN
    assert breaker.snapshot()["half_open_calls_in_flight"] == 0
    assert breaker.call(ok) == "ok"  # the slot is free again


def test_base_exception_in_closed_state_does_not_count_as_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)

    def exiting() -> None:
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        breaker.call(exiting)
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["calls"]["ignored"] == 1


def test_ignored_exceptions_are_not_recorded(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2, ignored_exceptions=(KeyError,))
    fail_times(breaker, 1)
    fail_times(breaker, 3, KeyError)
    snapshot = breaker.snapshot()
    assert snapshot["failure_count"] == 1  # neither increased nor reset
    assert snapshot["calls"]["ignored"] == 3
    assert current(breaker) is CircuitState.CLOSED


def test_ignored_exceptions_win_over_failure_exceptions(clock: FakeClock) -> None:
    breaker = make(
        clock,
        failure_threshold=1,
        failure_exceptions=(LookupError,),
        ignored_exceptions=(KeyError,),
    )
    fail_times(breaker, 1, KeyError)
    assert current(breaker) is CircuitState.CLOSED
    fail_times(breaker, 1, IndexError)
    assert current(breaker) is CircuitState.OPEN


def test_exceptions_outside_failure_exceptions_count_as_success(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2, failure_exceptions=(ConnectionError,))
    fail_times(breaker, 1)
    fail_times(breaker, 1, ValueError)  # propagates, but the dependency answered
    fail_times(breaker, 1)
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["calls"] == {
        "successful": 1,
        "failed": 2,
        "rejected": 0,
        "ignored": 0,
        "slow": 0,
    }


def test_rate_rule_waits_for_minimum_calls(clock: FakeClock) -> None:
    breaker = make(
        clock,
        failure_threshold=100,
        sliding_window_size=10,
        minimum_calls=4,
        failure_rate_threshold=50,
    )
    fail_times(breaker, 3)
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["failure_rate"] is None
    breaker.call(ok)  # 3 of 4 failed: 75% >= 50%, checked after a success too
    assert current(breaker) is CircuitState.OPEN


def test_rate_rule_opens_at_exactly_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=100, sliding_window_size=4, failure_rate_threshold=50)
    events: list[Event] = []
    breaker.add_listener(events.append)
    breaker.call(ok)
    fail_times(breaker, 1)
    breaker.call(ok)
    assert breaker.snapshot()["failure_rate"] is None  # minimum_calls defaults to 4
    fail_times(breaker, 1)
    assert current(breaker) is CircuitState.OPEN
    event = events[-1]
    assert isinstance(event, BreakerStateChanged)
    assert event.reason == "failure_rate_threshold reached (50.0% of the last 4 calls failed)"
    assert event.failure_rate == 50.0


def test_rate_rule_stays_closed_below_the_threshold_and_slides(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=100, sliding_window_size=4, failure_rate_threshold=50)
    fail_times(breaker, 1)
    for _ in range(3):
        breaker.call(ok)
    assert breaker.snapshot()["failure_rate"] == 25.0
    breaker.call(ok)  # the failure slides out of the window
    assert breaker.snapshot()["failure_rate"] == 0.0
    assert current(breaker) is CircuitState.CLOSED


def test_rate_window_is_cleared_on_every_transition(clock: FakeClock) -> None:
    breaker = make(
        clock,
        failure_threshold=100,
        sliding_window_size=4,
        minimum_calls=2,
        failure_rate_threshold=60,
        timeout=1,
        success_threshold=1,
    )
    fail_times(breaker, 2)
    assert current(breaker) is CircuitState.OPEN
    clock.advance(1)
    breaker.call(ok)  # half-open trial closes it
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["failure_rate"] is None
    fail_times(breaker, 1)
    assert breaker.snapshot()["failure_rate"] is None  # 1 call < minimum_calls
    breaker.call(ok)
    assert current(breaker) is CircuitState.CLOSED  # 1 of 2 after the clear, not 3 of 4
    assert breaker.snapshot()["failure_rate"] == 50.0


def test_slow_success_counts_as_failure_but_returns_its_result(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2, slow_call_duration=1.0)

    def slow() -> str:
        clock.advance(1.0)
        return "late"

    assert breaker.call(slow) == "late"
    assert breaker.snapshot()["failure_count"] == 1
    assert breaker.call(slow) == "late"
    assert current(breaker) is CircuitState.OPEN
    snapshot = breaker.snapshot()
    assert snapshot["calls"]["slow"] == 2
    assert snapshot["last_failure"]["type"] == "SlowCall"


def test_call_just_under_slow_call_duration_is_a_success(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, slow_call_duration=1.0)

    def quick() -> str:
        clock.advance(0.999)
        return "fast"

    assert breaker.call(quick) == "fast"
    assert current(breaker) is CircuitState.CLOSED


def test_slow_trial_call_reopens_half_open_breaker(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=1, slow_call_duration=0.5)
    fail_times(breaker, 1)
    clock.advance(1)

    def slow() -> str:
        clock.advance(2)
        return "late"

    assert breaker.call(slow) == "late"
    assert current(breaker) is CircuitState.OPEN


def test_forced_open_rejects_every_call_with_no_remaining(clock: FakeClock) -> None:
    breaker = make(clock, timeout=1)
    breaker.force_open(actor="alice", reason="maintenance")
    clock.advance(3600)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.remaining is None
    assert current(breaker) is CircuitState.FORCED_OPEN


def test_disabled_breaker_runs_every_call_and_never_trips(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    breaker.disable(actor="bob")
    fail_times(breaker, 5)
    assert breaker.call(ok) == "ok"
    assert current(breaker) is CircuitState.DISABLED
    snapshot = breaker.snapshot()
    assert snapshot["failure_count"] == 0
    assert snapshot["calls"]["failed"] == 0


def test_operator_actions_publish_actor_and_reason(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    events: list[Event] = []
    breaker.add_listener(events.append)
    breaker.force_open(actor="alice", reason="deploy")
    breaker.disable(actor="bob", reason="flaky alarms")
    breaker.reset(actor="carol", reason="fixed")
    assert [(e.to_state, e.actor, e.note) for e in events] == [  # type: ignore[attr-defined]
        ("forced_open", "alice", "deploy"),
        ("disabled", "bob", "flaky alarms"),
        ("closed", "carol", "fixed"),
    ]
    assert all(e.time == clock.wall() for e in events)


def test_reset_closes_and_clears_counters(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3)
    fail_times(breaker, 2)
    breaker.reset()
    fail_times(breaker, 2)
    assert current(breaker) is CircuitState.CLOSED
    fail_times(breaker, 1)
    assert current(breaker) is CircuitState.OPEN
    breaker.reset()
    assert current(breaker) is CircuitState.CLOSED
    assert breaker.snapshot()["opened_at"] is None


@pytest.mark.parametrize("rules", [{}, {"slow_call_duration": 60}, {"sliding_window_size": 9}])
def test_late_success_from_before_a_transition_does_not_count_as_a_trial(
    clock: FakeClock, rules: dict[str, Any]
) -> None:
    breaker = make(clock, failure_threshold=2, timeout=10, success_threshold=1, **rules)

    def trips_the_breaker_meanwhile() -> str:
        fail_times(breaker, 2)
        clock.advance(10)
        assert current(breaker) is CircuitState.HALF_OPEN
        return "done"

    assert breaker.call(trips_the_breaker_meanwhile) == "done"
    assert current(breaker) is CircuitState.HALF_OPEN  # a real trial is still needed
    assert breaker.snapshot()["calls"]["successful"] == 1


def test_late_failure_from_before_a_reset_is_not_counted(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)

    def reset_meanwhile() -> None:
        breaker.force_open()
        breaker.reset()
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        breaker.call(reset_meanwhile)
    snapshot = breaker.snapshot()
    assert snapshot["failure_count"] == 0
    assert snapshot["calls"]["failed"] == 1
    assert snapshot["last_failure"]["type"] == "ConnectionError"


def test_no_lock_is_held_while_the_protected_call_runs(clock: FakeClock) -> None:
    breaker = make(clock)
    seen: list[object] = []

    def inside() -> str:
        other = threading.Thread(target=lambda: seen.append(breaker.call(ok)))
        other.start()
        other.join(5)
        seen.append(breaker.snapshot()["state"])
        return "outer"

    assert breaker.call(inside) == "outer"
    assert seen == ["ok", "closed"]


def test_call_totals_are_exact_under_threads(clock: FakeClock) -> None:
    breaker = make(clock)

    def worker() -> None:
        for _ in range(500):
            breaker.call(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert breaker.snapshot()["calls"]["successful"] == 2000


def test_state_is_a_str_enum_with_the_documented_values() -> None:
    assert [s.value for s in CircuitState] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
    ]
    assert str(CircuitState.HALF_OPEN) == "half_open"
    assert isinstance(CircuitState.OPEN, str)
