"""RedisCircuitBreaker in one process against a real redis-server.

Two breakers with one name stand for two processes: the second is created after
the first is removed from the registry, on its own client (own pub/sub thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker,
)
from resilience.circuit_breaker import circuit_breaker_registry as registry
from resilience.errors import CircuitOpenError, ConfigValueError
from resilience.events import BreakerStateChanged, Event, bus
from resilience.redis import RedisCircuitBreaker, from_url
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Wait for the pub/sub thread to make ``check()`` true (it is an event, not time)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def boom() -> None:
    raise RuntimeError("down")


def ok() -> str:
    return "ok"


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((RuntimeError, CircuitOpenError)):
            breaker.call(boom)


class Pair:
    """Two breakers sharing one name, each on its own client: two 'processes'."""

    def __init__(self, url: str, name: str, config: CircuitBreakerConfig) -> None:
        self.clients = [from_url(url), from_url(url)]
        self.a = RedisCircuitBreaker(name, config, redis=self.clients[0])
        registry.remove(name)
        self.b = RedisCircuitBreaker(name, config, redis=self.clients[1])
        assert self.a.wait_synced(5) and self.b.wait_synced(5)

    def close(self) -> None:
        self.a.close()
        self.b.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def make_pair(redis_server: RedisServer, name: str) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def factory(**config: object) -> Pair:
        pair = Pair(redis_server.url, name, CircuitBreakerConfig(**config))  # type: ignore[arg-type]
        made.append(pair)
        return pair

    yield factory
    for pair in made:
        pair.close()


@pytest.fixture
def events() -> Iterator[list[BreakerStateChanged]]:
    seen: list[BreakerStateChanged] = []
    lock = threading.Lock()

    def listen(event: Event) -> None:
        if isinstance(event, BreakerStateChanged):
            with lock:
                seen.append(event)

    unsubscribe = bus.subscribe(listen)
    yield seen
    unsubscribe()


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_closed_breaker_sends_nothing_to_redis_on_success(redis_client, make_pair):
    pair = make_pair(failure_threshold=3)
    before = evalsha_calls(redis_client)
    for _ in range(200):
        assert pair.a.call(ok) == "ok"
    wrapped = circuit_breaker(name=pair.b.name)(ok)
    assert wrapped.breaker is pair.b  # the registry's one
    for _ in range(200):
        wrapped()
    assert evalsha_calls(redis_client) == before


def test_consecutive_failures_are_counted_in_redis_across_processes(redis_client, make_pair):
    pair = make_pair(failure_threshold=3, timeout=60)
    fail(pair.a, 2)
    assert redis_client.hget(pair.a.redis_key, "f") == b"2"
    fail(pair.b, 1)  # the third consecutive failure, in the other process
    assert pair.b.state is OPEN
    assert eventually(lambda: pair.a.state is OPEN)
    with pytest.raises(CircuitOpenError) as info:
        pair.a.call(ok)
    assert 59 < info.value.remaining <= 60


def test_a_success_after_a_failure_resets_the_shared_count(redis_client, make_pair):
    pair = make_pair(failure_threshold=2)
    fail(pair.a, 1)
    pair.a.call(ok)
    assert redis_client.hget(pair.a.redis_key, "f") == b"0"
    fail(pair.b, 1)
    assert pair.b.state is CLOSED


def test_an_open_transition_is_published_where_it_happened_and_where_it_is_seen(make_pair, events):
    pair = make_pair(failure_threshold=1, timeout=60)
    fail(pair.a, 1)
    assert eventually(lambda: len([e for e in events if e.to_state == "open"]) == 2)
    reasons = {e.reason for e in events if e.to_state == "open"}
    assert reasons == {"failure_threshold reached (1 consecutive failures)"}
    assert all(e.failure_count == 1 for e in events if e.to_state == "open")


def test_a_state_change_is_visible_in_the_other_process_within_100_ms(make_pair):
    pair = make_pair(failure_threshold=1, timeout=60)
    opened = threading.Event()
    pair.b.add_listener(lambda event: opened.set())
    start = time.monotonic()
    fail(pair.a, 1)
    assert opened.wait(1.0)
    assert time.monotonic() - start < 0.1
    assert pair.b._state is OPEN


def test_reset_in_one_process_closes_the_breaker_everywhere(make_pair, events):
    pair = make_pair(failure_threshold=1, timeout=60)
    fail(pair.a, 1)
    assert eventually(lambda: pair.b.state is OPEN)
    pair.b.reset(actor="alice", reason="fixed")
    assert pair.b.state is CLOSED
    assert eventually(lambda: pair.a.state is CLOSED)
    assert pair.a.call(ok) == "ok"
    resets = [e for e in events if e.reason.startswith("manual reset")]
    assert len(resets) == 2
    assert {(e.actor, e.note) for e in resets} == {("alice", "fixed")}


def test_reset_of_a_closed_breaker_still_reaches_every_process(make_pair, events):
    pair = make_pair()
    pair.a.reset(actor="bob")
    assert eventually(lambda: len([e for e in events if e.actor == "bob"]) == 2), events


def test_force_open_and_disable_are_shared(make_pair):
    pair = make_pair()
    pair.a.force_open(actor="ops")
    assert eventually(lambda: pair.b.state is CircuitState.FORCED_OPEN)
    with pytest.raises(CircuitOpenError) as info:
        pair.b.call(ok)
    assert info.value.remaining is None
    pair.b.disable()
    assert eventually(lambda: pair.a.state is CircuitState.DISABLED)
    fail(pair.a, 5)  # not recorded while disabled
    assert pair.b.state is CircuitState.DISABLED


def test_half_open_trial_permits_are_shared(make_pair):
    pair = make_pair(failure_threshold=1, timeout=0, half_open_max_calls=1, success_threshold=1)
    fail(pair.a, 1)
    assert eventually(lambda: pair.b._state is OPEN)  # until then B runs its CLOSED path
    rejected: list[CircuitOpenError] = []

    def trial() -> str:
        # While A's trial call runs, B may not start another one.
        with pytest.raises(CircuitOpenError) as info:
            pair.b.call(ok)
        rejected.append(info.value)
        return "probe"

    assert pair.a.call(trial) == "probe"
    assert rejected[0].remaining == 0
    assert pair.a.state is CLOSED
    assert eventually(lambda: pair.b.state is CLOSED)


def test_a_failed_trial_reopens_the_breaker_everywhere(make_pair):
    pair = make_pair(failure_threshold=1, timeout=0.0, success_threshold=2)
    fail(pair.a, 1)
    assert eventually(lambda: pair.b._state is OPEN)
    fail(pair.b, 1)  # B's trial fails
    assert pair.b._state is OPEN
    assert eventually(lambda: pair.a._state is OPEN)


def test_a_cancelled_or_ignored_trial_gives_its_permit_back(redis_client, make_pair):
    pair = make_pair(
        failure_threshold=1, timeout=0, half_open_max_calls=1, ignored_exceptions=(KeyError,)
    )
    fail(pair.a, 1)
    assert eventually(lambda: pair.b._state is OPEN)

    def ignored() -> None:
        raise KeyError("not a failure")

    with pytest.raises(KeyError):
        pair.a.call(ignored)
    assert redis_client.hget(pair.a.redis_key, "fl") == b"0"
    assert pair.b.call(ok) == "ok"  # the permit is free again


def test_the_failure_rate_rule_trips_the_breaker_everywhere(make_pair):
    pair = make_pair(failure_threshold=100, sliding_window_size=4, timeout=60)
    for _ in range(2):
        pair.a.call(ok)
    fail(pair.a, 2)
    assert pair.a.state is OPEN
    assert eventually(lambda: pair.b.state is OPEN)


def test_snapshot_reports_the_backend(make_pair):
    pair = make_pair()
    view = pair.a.snapshot()
    assert view["state"] == "closed"
    assert view["shared"] is True
    assert view["backend"] == "redis"
    assert view["backend_available"] is True
    assert view["subscribed"] is True
    assert view["redis_key"].endswith(f"{{{pair.a.name}}}")


def test_names_with_braces_are_refused(redis_client):
    with pytest.raises(ConfigValueError):
        RedisCircuitBreaker("a{b}", redis=redis_client)
    assert registry.get("a{b}") is None


def test_redis_down_falls_back_to_local_state_and_recovers(fresh_server: RedisServer, name, caplog):
    client = from_url(fresh_server.url)
    breaker = RedisCircuitBreaker(
        name, CircuitBreakerConfig(failure_threshold=2, timeout=60), redis=client
    )
    assert breaker.wait_synced(5)
    caplog.set_level(logging.WARNING, logger="resilience.redis")
    fresh_server.kill()
    assert breaker.call(ok) == "ok"
    fail(breaker, 2)  # only the dependency's errors reach the caller
    assert breaker.state is OPEN  # opened locally
    assert breaker.snapshot()["backend_available"] is False
    assert any("unavailable" in record.message for record in caplog.records)
    fresh_server.start()
    # Back: the pub/sub thread resubscribes and adopts Redis's (empty, closed) state.
    assert eventually(lambda: breaker._state is CLOSED, timeout=5)
    assert eventually(lambda: breaker.snapshot()["subscribed"], timeout=5)
    breaker.close()
    client.close()


def test_a_reset_during_an_outage_is_sent_when_redis_returns(redis_server, redis_client, name):
    clients = [from_url(redis_server.url), from_url(redis_server.url)]
    config = CircuitBreakerConfig(failure_threshold=1, timeout=60)
    a = RedisCircuitBreaker(name, config, redis=clients[0], retry_interval=0.05)
    registry.remove(name)
    b = RedisCircuitBreaker(name, config, redis=clients[1])
    try:
        assert a.wait_synced(5) and b.wait_synced(5)
        fail(a, 1)
        assert eventually(lambda: b.state is OPEN)
        # Redis stops answering (state kept): commands time out after 0.1 s.
        redis_client.client_pause(400, all=True)
        a.reset(actor="ops")
        assert a.state is CLOSED  # applied locally at once
        assert a.snapshot()["backend_available"] is False
        assert b.state is OPEN
        # Redis answers again: A's pub/sub thread replays the reset to Redis.
        assert eventually(lambda: b.state is CLOSED, timeout=5)
        assert a._queued_operator is None
    finally:
        a.close()
        b.close()
        for client in clients:
            client.close()
