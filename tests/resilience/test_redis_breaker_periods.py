"""RedisCircuitBreaker: periods, registration, replayed operator actions, shared counts.

Two breakers of one name, each on its own client, stand for two processes (as in
test_redis_breaker.py). A breaker that has been ``close()``d no longer follows the
pub/sub channel: it stands for a process that missed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState
from resilience.circuit_breaker import circuit_breaker_registry as registry
from resilience.redis import RedisCircuitBreaker, from_url
from tests.clock import FakeClock
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer
from tests.resilience.test_redis_breaker import eventually, fail, ok

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN


@pytest.fixture
def make_two(
    redis_server: RedisServer, name: str
) -> Iterator[Callable[..., tuple[RedisCircuitBreaker, RedisCircuitBreaker]]]:
    made: list[RedisCircuitBreaker] = []
    clients: list[redis.Redis] = []

    def factory(
        clock: FakeClock | None = None, **config: Any
    ) -> tuple[RedisCircuitBreaker, RedisCircuitBreaker]:
        rules = CircuitBreakerConfig(**config)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock, "wall_clock": clock.wall}
        for _ in range(2):
            client = from_url(redis_server.url)
            clients.append(client)
            registry.remove(name)
            made.append(RedisCircuitBreaker(name, rules, redis=client, **extra))
        a, b = made[-2:]
        assert a.wait_synced(5) and b.wait_synced(5)
        return a, b

    yield factory
    for breaker in made:
        breaker.close()
    for client in clients:
        client.close()


def shared(client: redis.Redis, breaker: RedisCircuitBreaker, field: str) -> str:
    value = client.hget(breaker.redis_key, field)
    assert isinstance(value, bytes)
    return value.decode()


def test_the_breaker_is_fully_built_when_the_registry_publishes_it(redis_client, name, monkeypatch):
    seen: list[dict[str, Any]] = []
    real = registry.register

    def register(key: str, item: Any) -> Any:
        # What a concurrent get_or_create or /metrics scrape could see at this moment.
        seen.append(item.snapshot())
        return real(key, item)

    monkeypatch.setattr(registry, "register", register)
    breaker = RedisCircuitBreaker(name, redis=redis_client)
    assert seen[0]["redis_key"] == breaker.redis_key
    assert seen[0]["shared"] is True


def test_a_trial_from_an_earlier_half_open_period_is_not_counted(redis_client, make_two):
    clock = FakeClock()
    a, b = make_two(
        clock,
        failure_threshold=1,
        success_threshold=1,
        half_open_max_calls=2,
        timeout=60,
    )

    def elapse_open_period() -> None:
        redis_client.hset(a.redis_key, "ou", "0")  # Redis's clock: the timeout is over
        clock.advance(61)

    fail(a, 1)
    assert eventually(lambda: b.state is OPEN)
    elapse_open_period()
    b.close()  # from now on B misses the messages, and learns only from a resync

    def stale_trial() -> str:
        # While B's trial (period 1) runs, A's trial fails and a new period starts.
        assert eventually(lambda: a._state is HALF_OPEN)
        fail(a, 1)
        assert a.state is OPEN
        elapse_open_period()
        assert a.state is HALF_OPEN
        b.resync()  # B sees HALF_OPEN again: the same state's name, another period
        return "ok"

    assert b.call(stale_trial) == "ok"
    # The success of the earlier period's trial neither closes the breaker nor frees
    # a permit of the new period.
    assert shared(redis_client, a, "s") == "half_open"
    assert shared(redis_client, a, "sc") == "0"
    assert a.state is HALF_OPEN


def test_an_operator_action_replayed_after_an_outage_does_not_override_a_newer_one(
    redis_client, make_two, monkeypatch
):
    a, b = make_two(failure_threshold=1, timeout=60)
    a.close()  # the test replays A's queued action itself
    script = a._script

    def unreachable(**kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is unreachable from A")

    monkeypatch.setattr(a, "_script", unreachable)
    a.reset(actor="old")  # queued: Redis cannot be told
    assert a.state is CLOSED
    monkeypatch.setattr(a, "_script", script)
    b.force_open(actor="newer")  # another process, after A's action
    a.resync()
    assert shared(redis_client, a, "s") == "forced_open"
    assert a.state is FORCED_OPEN
    assert a._queued_operator is None


def test_an_operator_action_queued_during_an_outage_is_replayed_if_none_is_newer(
    redis_client, make_two, monkeypatch
):
    a, b = make_two(failure_threshold=1, timeout=60)
    fail(b, 1)
    assert eventually(lambda: a.state is OPEN)
    a.close()
    script = a._script

    def unreachable(**kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is unreachable from A")

    monkeypatch.setattr(a, "_script", unreachable)
    a.force_open(actor="ops")
    monkeypatch.setattr(a, "_script", script)
    a.resync()
    assert shared(redis_client, a, "s") == "forced_open"
    assert shared(redis_client, a, "a") == "ops"


def test_a_success_in_any_process_resets_the_shared_consecutive_count(redis_client, make_two):
    # F S S F S S F over two processes: never 3 consecutive failures, as in memory.
    a, b = make_two(failure_threshold=3, timeout=60)
    for _ in range(2):
        fail(a, 1)
        # B hears of the failure (published), so its next success resets the count.
        assert eventually(lambda: b.snapshot()["failure_count"] == 1)
        b.call(ok)
        b.call(ok)
        assert shared(redis_client, a, "f") == "0"
        assert eventually(lambda: a.snapshot()["failure_count"] == 0)
    fail(a, 1)
    assert a.state is CLOSED
    assert b.state is CLOSED
