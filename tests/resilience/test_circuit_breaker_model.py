"""Model-based test: the in-memory breaker against a small reference model.

Hypothesis drives random sequences of plain calls and streamed calls (a guarded
generator is a call held in flight, so overlapping calls need no threads), outcomes
(success, failure, ignored error, call_timeout, outside cancellation, abandoning a
stream), time passing on a fake clock and operator actions. After every step the
breaker's state, counters and half-open slot count must equal the model's, and the
trial cap must hold.

Random runs rarely line up trials held across two half-open periods at the cap;
test_circuit_breaker_limits.py pins that case down step by step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import CallTimeoutError, CircuitOpenError
from tests.clock import FakeClock

CALL_TIMEOUT = 5.0
OPEN_SECONDS = 4.0
OUTCOMES = ("success", "failure", "ignored", "timeout")
STREAM_ENDS = (*OUTCOMES, "cancelled", "abandoned")
# Failures drawn more often than other outcomes, so the breaker opens and half-opens.
CALL_OUTCOMES = st.sampled_from(("failure", *OUTCOMES))
_names = itertools.count()


@dataclass(eq=False)
class Call:
    """A call the model admitted and that has not ended yet."""

    period: int
    trial: bool
    recorded: bool  # False when admitted while DISABLED
    holding: bool  # a trial still holding a half-open slot


class Model:
    """What the breaker should do, written as plainly as possible."""

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        self.config = config
        self.clock = clock
        self.state = "closed"
        self.period = 0
        self.failures = 0
        self.successes = 0
        self.open_until = 0.0
        self.calls: list[Call] = []
        self.totals = {"successful": 0, "failed": 0, "rejected": 0, "ignored": 0}

    @property
    def held(self) -> int:
        return sum(1 for call in self.calls if call.holding)

    def move(self, state: str) -> None:
        self.state = state
        self.period += 1
        self.failures = self.successes = 0
        if state == "open":
            self.open_until = self.clock() + self.config.timeout_seconds

    def refresh(self) -> None:
        if self.state == "open" and self.clock() >= self.open_until:
            self.move("half_open")

    def admit(self) -> Call | None:
        """The admitted call, or None if rejected."""
        self.refresh()
        if self.state == "disabled":
            return Call(self.period, trial=False, recorded=False, holding=False)
        if self.state in ("open", "forced_open") or (
            self.state == "half_open" and self.held >= self.config.half_open_max_calls
        ):
            self.totals["rejected"] += 1
            return None
        trial = self.state == "half_open"
        return Call(self.period, trial=trial, recorded=True, holding=trial)

    def end(self, call: Call, outcome: str) -> None:
        if not call.recorded:
            return
        current = call.period == self.period
        if call.holding:
            call.holding = False
        if outcome in ("ignored", "cancelled"):
            self.totals["ignored"] += 1
            return
        failed = outcome in ("failure", "timeout")
        self.totals["failed" if failed else "successful"] += 1
        if not current:
            return
        if self.state == "closed":
            if failed:
                self.failures += 1
                if self.failures >= self.config.failure_threshold:
                    self.move("open")
            else:
                self.failures = 0
        elif self.state == "half_open":
            if failed:
                self.move("open")
            else:
                self.successes += 1
                if self.successes >= self.config.success_threshold:
                    self.move("closed")

    def operator(self, state: str) -> None:
        self.move(state)
        for call in self.calls:  # an operator forgets trials of earlier periods
            call.holding = False


class BreakerMachine(RuleBasedStateMachine):
    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.name = f"model-{next(_names)}"

    @initialize(
        failure_threshold=st.integers(1, 2),
        success_threshold=st.integers(1, 3),
        half_open_max_calls=st.integers(1, 2),
    )
    def build(
        self, failure_threshold: int, success_threshold: int, half_open_max_calls: int
    ) -> None:
        config = CircuitBreakerConfig(
            failure_threshold=failure_threshold,
            success_threshold=success_threshold,
            half_open_max_calls=half_open_max_calls,
            timeout=OPEN_SECONDS,
            call_timeout=CALL_TIMEOUT,
            ignored_exceptions=(LookupError,),
        )
        self.breaker = CircuitBreaker(
            self.name, config, clock=self.clock, wall_clock=self.clock.wall
        )
        self.model = Model(config, self.clock)
        clock = self.clock

        @circuit_breaker(name=self.name)
        def stream() -> Generator[str, str, None]:
            outcome = yield "admitted"
            self.act(clock, outcome)

        self.stream = stream

    @staticmethod
    def act(clock: FakeClock, outcome: str) -> str:
        if outcome == "failure":
            raise ConnectionError("refused")
        if outcome == "ignored":
            raise KeyError("not found")
        if outcome == "cancelled":
            raise asyncio.CancelledError
        if outcome == "timeout":
            clock.advance(CALL_TIMEOUT)
        return "ok"

    def teardown(self) -> None:
        circuit_breaker_registry.remove(self.name)

    # -- rules -------------------------------------------------------------------------

    @rule(outcome=CALL_OUTCOMES, times=st.integers(1, 3))
    def call_now(self, outcome: str, times: int) -> None:
        for _ in range(times):
            self.one_call(outcome)

    def one_call(self, outcome: str) -> None:
        expected = self.model.admit()
        try:
            self.breaker.call(self.act, self.clock, outcome)
        except CircuitOpenError:
            assert expected is None
            return
        except (ConnectionError, KeyError, CallTimeoutError):
            pass
        assert expected is not None
        self.model.end(expected, outcome)

    @rule(target=streams)
    def start_stream(self) -> Any:
        expected = self.model.admit()
        gen = self.stream()
        try:
            assert next(gen) == "admitted"
        except CircuitOpenError:
            assert expected is None
            return None
        assert expected is not None
        self.model.calls.append(expected)
        return (gen, expected)

    # The same rule again, enabled only around half-open, so trials pile up there.
    @precondition(lambda self: self.model.state in ("open", "half_open"))
    @rule(target=streams)
    def start_trial(self) -> Any:
        return self.start_stream()

    # Streams end only while two or more are running, so calls overlap, and trials
    # outlive the half-open period that admitted them.
    @precondition(lambda self: len(self.model.calls) >= 2)
    @rule(started=consumes(streams), outcome=st.sampled_from(STREAM_ENDS))
    def end_stream(self, started: Any, outcome: str) -> None:
        if started is None:
            return
        gen, expected = started
        self.model.calls.remove(expected)
        if outcome == "abandoned":
            gen.close()
            self.model.end(expected, "success")
            return
        # A timed-out step only fails when the breaker was not DISABLED at admission.
        outcome_seen = outcome if expected.recorded else "success"
        with pytest.raises(
            (StopIteration, ConnectionError, KeyError, asyncio.CancelledError, CallTimeoutError)
        ):
            gen.send(outcome)
        self.model.end(expected, outcome_seen)

    @rule(seconds=st.sampled_from([1.0, OPEN_SECONDS]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.model.state == "open")
    @rule()
    def wait_out_the_open_timeout(self) -> None:
        self.clock.now = max(self.clock.now, self.model.open_until)

    @precondition(lambda self: self.model.state != "closed" or self.model.failures > 0)
    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.operator("closed")

    # The operator states are sticky until a reset: entered rarely (only from the
    # automatic states), so most steps exercise the automatic state machine.
    @precondition(lambda self: self.model.state in ("open", "half_open"))
    @rule(action=st.sampled_from(["force_open", "disable"]))
    def operate(self, action: str) -> None:
        getattr(self.breaker, action)()
        self.model.operator("forced_open" if action == "force_open" else "disabled")

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        self.model.refresh()
        snapshot = self.breaker.snapshot()
        model = self.model
        assert snapshot["state"] == model.state
        assert snapshot["failure_count"] == model.failures
        assert snapshot["success_count"] == model.successes
        held = model.held if model.state == "half_open" else 0
        assert snapshot["half_open_calls_in_flight"] == held
        calls = snapshot["calls"]
        assert {key: calls[key] for key in model.totals} == model.totals

    @invariant()
    def trial_cap_holds(self) -> None:
        assert self.model.held <= self.model.config.half_open_max_calls
        if self.model.state == "half_open":
            assert (
                self.breaker.snapshot()["half_open_calls_in_flight"]
                <= self.model.config.half_open_max_calls
            )


BreakerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerModel = BreakerMachine.TestCase
