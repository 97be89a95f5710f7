"""A model-based test of N Redis-shared breakers in one process, on a real redis-server.

Each breaker stands for a process. They have no pub/sub thread (their hub is a
stand-in that does nothing): the test reads the channel itself and hands each
message to each breaker when a rule says so, or drops it, so messages arrive late,
out of step between processes, or never (then only a resync tells the breaker).
Calls are split in two steps (admission, then an outcome later), through the same
internal calls ``CircuitBreaker.call`` makes, so trials of several processes overlap
and outlive their half-open period.

Checked after every step, against what Redis holds:

* trial cap: calls holding a permit of the current half-open period <= half_open_max_calls;
* an outcome changes Redis only if its call was admitted in Redis's current period
  (no success, failure or permit release from an earlier period is counted);
* consecutive failures (the documented cluster semantics): a failure adds one to
  Redis's count and opens the breaker at the threshold; a success resets the count
  when its process has heard of a pending count, and changes nothing otherwise; a
  process that received every message knows whether a count is pending;
* a success of a current-period trial counts once, a failed trial reopens.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState
from resilience.circuit_breaker import circuit_breaker_registry as registry
from resilience.errors import CircuitOpenError
from resilience.redis import RedisCircuitBreaker, from_url
from resilience.redis import breaker as breaker_module
from tests.clock import FakeClock
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer

N = 3
MAX_TRIALS = 2
TIMEOUT = 60.0


class QuietHub:
    """Stands in for the pub/sub hub: the test delivers messages and resyncs itself."""

    def __init__(self) -> None:
        self.connected = threading.Event()

    def add(self, subscriber: object) -> None:
        pass

    def remove(self, subscriber: object) -> None:
        pass


@pytest.fixture
def quiet_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_module, "hub_for", lambda client: QuietHub())


@dataclass
class Call:
    process: int
    generation: int
    period: tuple[str, int]  # the Redis (epoch, version) its process saw when admitting it


def fields(client: redis.Redis, key: str) -> dict[str, Any]:
    raw = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}  # type: ignore[union-attr]
    return {
        "s": raw["s"],
        "ep": raw["ep"],
        "v": int(raw["v"]),
        "f": int(raw["f"]),
        "sc": int(raw["sc"]),
        "fl": int(raw["fl"]),
    }


def machine(url: str, *, failures: int, successes: int) -> type[RuleBasedStateMachine]:
    class SharedBreakers(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.client = from_url(url, socket_timeout=2.0)
            self.name = f"model-{uuid.uuid4().hex[:10]}"
            self.clock = FakeClock()
            config = CircuitBreakerConfig(
                failure_threshold=failures,
                success_threshold=successes,
                half_open_max_calls=MAX_TRIALS,
                timeout=TIMEOUT,
            )
            self.breakers: list[RedisCircuitBreaker] = []
            for _ in range(N):
                registry.remove(self.name)
                breaker = RedisCircuitBreaker(
                    self.name,
                    config,
                    redis=self.client,
                    clock=self.clock,
                    wall_clock=self.clock.wall,
                )
                self.breakers.append(breaker)
            registry.remove(self.name)
            self.key = self.breakers[0].redis_key
            self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(self.breakers[0].channel)
            self.inboxes: list[list[Any]] = [[] for _ in range(N)]
            self.missed = [False] * N  # dropped a message since its last resync
            self.calls: list[Call] = []
            for breaker in self.breakers:
                breaker.resync()
                assert breaker.wait_synced(0)
            self.collect()

        def teardown(self) -> None:
            self.pubsub.close()
            self.client.close()

        # -- plumbing ---------------------------------------------------------------

        def collect(self) -> None:
            """Read every message published so far (PING's reply comes after them)."""
            token = uuid.uuid4().hex
            self.pubsub.ping(token)
            for _ in range(1000):  # None: nothing yet, or an ignored subscribe reply
                message = self.pubsub.get_message(timeout=0.01)
                if message is None:
                    continue
                if message["type"] == "pong":
                    if message["data"] in (token, token.encode()):
                        return
                    continue
                if message["type"] == "message":
                    for inbox in self.inboxes:
                        inbox.append(message["data"])
            raise AssertionError("Redis did not answer the PING")

        def redis_state(self) -> dict[str, Any]:
            return fields(self.client, self.key)

        # -- rules ------------------------------------------------------------------

        @rule(process=st.integers(0, N - 1))
        def start_call(self, process: int) -> None:
            breaker = self.breakers[process]
            with breaker._lock:
                closed_fast = breaker._state is CircuitState.CLOSED and breaker._plain
                generation = breaker._generation
            try:
                if not closed_fast:
                    generation = breaker._admit()
            except CircuitOpenError:
                self.collect()
                return
            with breaker._lock:
                period = (breaker._remote_epoch, breaker._remote_version)
            self.calls.append(Call(process, generation, period))
            self.collect()

        @precondition(lambda self: self.calls)
        @rule(data=st.data(), outcome=st.sampled_from(["ok", "fail", "cancel"]))
        def finish_call(self, data: st.DataObject, outcome: str) -> None:
            call = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
            breaker = self.breakers[call.process]
            before = self.redis_state()
            heard = breaker._failure_count > 0
            if outcome == "ok":
                breaker._on_success(call.generation, None)
            elif outcome == "fail":
                breaker._on_error(RuntimeError("down"), call.generation, None)
            else:
                breaker._on_error(asyncio.CancelledError(), call.generation, None)
            self.collect()
            after = self.redis_state()
            current = call.period == (before["ep"], before["v"])
            if not current:
                assert after == before, f"an outcome from an ended period changed Redis: {call}"
                return
            if before["s"] == "closed":
                self.check_closed(before, after, outcome, heard)
            elif before["s"] == "half_open":
                self.check_trial(before, after, outcome)
            else:
                assert after == before

        def check_closed(
            self, before: dict[str, Any], after: dict[str, Any], outcome: str, heard: bool
        ) -> None:
            if outcome == "fail":
                if before["f"] + 1 >= failures:
                    assert (after["s"], after["v"]) == ("open", before["v"] + 1)
                else:
                    assert (after["s"], after["f"]) == ("closed", before["f"] + 1)
            elif outcome == "ok" and heard:
                assert (after["s"], after["v"], after["f"]) == ("closed", before["v"], 0)
            else:
                assert after == before  # a success nobody told about a count; a cancel

        def check_trial(self, before: dict[str, Any], after: dict[str, Any], outcome: str) -> None:
            if outcome == "ok":
                if before["sc"] + 1 >= successes:
                    assert (after["s"], after["v"]) == ("closed", before["v"] + 1)
                else:
                    assert (after["sc"], after["fl"]) == (before["sc"] + 1, before["fl"] - 1)
            elif outcome == "fail":
                assert (after["s"], after["v"]) == ("open", before["v"] + 1)
            else:
                assert (after["v"], after["sc"], after["fl"]) == (
                    before["v"],
                    before["sc"],
                    before["fl"] - 1,
                )

        @rule(process=st.integers(0, N - 1), drop=st.booleans())
        def next_message(self, process: int, drop: bool) -> None:
            inbox = self.inboxes[process]
            if inbox:
                payload = inbox.pop(0)
                if drop:
                    self.missed[process] = True
                else:
                    self.breakers[process].observe(payload)
            self.collect()

        @rule(process=st.integers(0, N - 1))
        def every_message(self, process: int) -> None:
            inbox, self.inboxes[process] = self.inboxes[process], []
            for payload in inbox:
                self.breakers[process].observe(payload)
            self.collect()

        @rule(process=st.integers(0, N - 1))
        def resync(self, process: int) -> None:
            self.breakers[process].resync()
            self.missed[process] = False
            self.collect()

        @rule()
        def open_period_ends(self) -> None:
            if self.redis_state()["s"] == "open":
                self.client.hset(self.key, "ou", "0")  # Redis's clock: the timeout is over
            self.clock.advance(TIMEOUT + 1)

        @rule(process=st.integers(0, N - 1), action=st.sampled_from(["reset", "force_open"]))
        def operator(self, process: int, action: str) -> None:
            getattr(self.breakers[process], action)(actor="model")
            self.collect()

        # -- invariants -------------------------------------------------------------

        @invariant()
        def trials_of_the_current_period_stay_under_the_cap(self) -> None:
            state = self.redis_state()
            if state["s"] != "half_open":
                return
            period = (state["ep"], state["v"])
            holding = [call for call in self.calls if call.period == period]
            assert len(holding) <= MAX_TRIALS
            assert state["fl"] == len(holding)

        @invariant()
        def a_process_that_heard_everything_knows_of_a_pending_count(self) -> None:
            # What lets a success anywhere reset the count (the documented semantics).
            state = self.redis_state()
            if state["s"] != "closed":
                return
            for process, breaker in enumerate(self.breakers):
                if self.inboxes[process] or self.missed[process]:
                    continue
                if (breaker._remote_epoch, breaker._remote_version) != (state["ep"], state["v"]):
                    continue
                assert (breaker._failure_count > 0) == (state["f"] > 0), process

    return SharedBreakers


def test_redis_shared_breakers_against_the_model(redis_server: RedisServer, quiet_hub) -> None:
    run_state_machine_as_test(
        machine(redis_server.url, failures=2, successes=2),
        settings=settings(
            max_examples=200,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


class Pick:
    """Stands for Hypothesis's ``data``: picks the in-flight call at ``index``."""

    def __init__(self, index: int) -> None:
        self.index = index

    def draw(self, strategy: object) -> int:
        return self.index


def test_a_trial_that_outlived_its_half_open_period_is_not_counted(
    redis_server: RedisServer, quiet_hub
) -> None:
    """A schedule the random search rarely builds, run through the same machine."""
    model: Any = machine(redis_server.url, failures=1, successes=1)()
    try:
        for step in (
            lambda: model.start_call(process=0),
            lambda: model.finish_call(Pick(0), "fail"),  # opens: period 1
            lambda: [model.every_message(process) for process in range(N)],
            model.open_period_ends,
            lambda: model.start_call(process=2),  # a trial of half-open period 2
            lambda: model.every_message(1),
            lambda: model.start_call(process=1),  # another trial of period 2
            lambda: model.finish_call(Pick(1), "fail"),  # reopens: period 3
            lambda: model.every_message(1),
            model.open_period_ends,
            lambda: model.start_call(process=1),  # half-open period 4, and a trial
            lambda: model.resync(2),  # process 2 sees HALF_OPEN again: period 4
            lambda: model.finish_call(Pick(0), "ok"),  # process 2's trial of period 2
        ):
            step()
            model.trials_of_the_current_period_stay_under_the_cap()
            model.a_process_that_heard_everything_knows_of_a_pending_count()
        assert model.redis_state()["s"] == "half_open"
    finally:
        model.teardown()
