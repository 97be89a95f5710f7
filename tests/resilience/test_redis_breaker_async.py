"""RedisCircuitBreaker.acall never makes the event loop wait for Redis.

The breaker's script is wrapped in a gate that holds one op until another task on
the loop opens it: if the round trip ran on the loop, that task could not run.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import redis

from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState, circuit_breaker
from resilience.errors import CircuitOpenError
from resilience.redis import RedisCircuitBreaker
from tests.clock import FakeClock
from tests.resilience._redis_fixtures import *  # noqa: F403

GUARD = 5.0  # seconds before a blocked loop gives up (a deadlock guard, not a threshold)


class Gate:
    """Holds the script's ``op`` until :meth:`open` is called from the loop."""

    def __init__(self, breaker: RedisCircuitBreaker, op: str) -> None:
        self.real = breaker._script
        self.op = op
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.in_time: bool | None = None
        breaker._script = self  # type: ignore[assignment]

    def __call__(self, *, keys: Any, args: Any, client: Any) -> Any:
        if args[0] == self.op:
            self.entered.set()
            self.in_time = self.opened.wait(GUARD)
        return self.real(keys=keys, args=args, client=client)

    async def open_when_entered(self) -> None:
        # Waits in a thread; only a free loop can resume this task and open the gate.
        await asyncio.to_thread(self.entered.wait, GUARD)
        self.opened.set()


async def boom() -> None:
    raise RuntimeError("down")


async def fine() -> str:
    return "ok"


@pytest.fixture
def breaker(redis_client: redis.Redis, name: str) -> RedisCircuitBreaker:
    made = RedisCircuitBreaker(
        name,
        CircuitBreakerConfig(failure_threshold=3, success_threshold=1, timeout=60),
        redis=redis_client,
        clock=FakeClock(),
    )
    assert made.wait_synced(5)
    return made


async def test_a_failure_reaches_redis_from_a_worker_thread(breaker, redis_client):
    gate = Gate(breaker, "fail")
    opener = asyncio.create_task(gate.open_when_entered())
    with pytest.raises(RuntimeError):
        await breaker.acall(boom)
    await opener
    assert gate.in_time is True  # the loop ran the opener while Redis was "slow"
    assert redis_client.hget(breaker.redis_key, "f") == b"1"  # sent before acall returned


async def test_a_trial_permit_is_taken_from_a_worker_thread(breaker, redis_client):
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await breaker.acall(boom)
    assert breaker.state is CircuitState.OPEN
    redis_client.hset(breaker.redis_key, "ou", "0")  # Redis's clock: the timeout is over
    breaker._clock.advance(61)
    gate = Gate(breaker, "trial")
    opener = asyncio.create_task(gate.open_when_entered())
    assert await breaker.acall(fine) == "ok"
    await opener
    assert gate.in_time is True
    assert breaker.state is CircuitState.CLOSED  # the trial's success reached Redis
    assert redis_client.hget(breaker.redis_key, "s") == b"closed"


async def test_the_decorator_uses_the_same_path(breaker, redis_client):
    wrapped = circuit_breaker(name=breaker.name)(boom)
    gate = Gate(breaker, "fail")
    opener = asyncio.create_task(gate.open_when_entered())
    with pytest.raises(RuntimeError):
        await wrapped()
    await opener
    assert gate.in_time is True


async def test_a_rejected_trial_raises_circuit_open(breaker, redis_client):
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await breaker.acall(boom)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(fine)  # still open: rejected locally, no round trip


async def test_a_late_echo_of_the_open_transition_does_not_restart_the_countdown(
    breaker, redis_client
):
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await breaker.acall(boom)
    # The view this process already applied from the script's reply, as pub/sub delivers
    # it again (its ``rem`` says 60 s, measured when it was published).
    echo = json.dumps(breaker._remote("state", force=True))
    redis_client.hset(breaker.redis_key, "ou", "0")
    breaker._clock.advance(61)
    breaker.observe(echo)  # arrives after the timeout ran out here
    assert await breaker.acall(fine) == "ok"
    assert breaker.state is CircuitState.CLOSED
