"""Cluster mode switch (resilience.redis.install) and the registries' factories,
plus the ``observed`` mark that lets a recorder write each shared transition once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import ConfigTypeError
from resilience.events import BreakerStateChanged, Event, bus
from resilience.rate_limiter import (
    KeyedRateLimiter,
    RateLimitConfig,
    RateLimiter,
    rate_limiter_registry,
)
from resilience.redis import (
    RedisCircuitBreaker,
    RedisKeyedRateLimiter,
    RedisRateLimiter,
    from_url,
    install,
    installed,
    uninstall,
)
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer

LIMIT = RateLimitConfig(max_requests=5, time_window=1)


@pytest.fixture(autouse=True)
def _back_to_memory() -> Iterator[None]:
    yield
    uninstall()


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


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def boom() -> None:
    raise RuntimeError("down")


# -- factories, no Redis needed ----------------------------------------------------------


def test_registries_build_in_memory_primitives_by_default(name):
    assert circuit_breaker_registry.factory is CircuitBreaker
    assert rate_limiter_registry.factory is RateLimiter
    assert rate_limiter_registry.keyed_factory is KeyedRateLimiter
    assert type(circuit_breaker_registry.get_or_create(name)) is CircuitBreaker


def test_get_or_create_and_the_breaker_decorator_use_the_breaker_factory(name):
    made: list[str] = []

    def factory(breaker_name: str, config: CircuitBreakerConfig | None) -> CircuitBreaker:
        made.append(breaker_name)
        return CircuitBreaker(breaker_name, config)

    circuit_breaker_registry.factory = factory

    @circuit_breaker(name=name)
    def work() -> int:
        return 1

    assert work() == 1
    assert made == [name]
    assert circuit_breaker_registry.get_or_create(name) is work.breaker
    assert made == [name]  # an existing breaker is reused, not rebuilt


def test_limiter_get_or_create_uses_the_factory_and_none_restores_the_default(name):
    made: list[str] = []

    def factory(config: RateLimitConfig, *, name: str, **kwargs: object) -> RateLimiter:
        made.append(name)
        return RateLimiter(config, name=name, register=False)

    rate_limiter_registry.factory = factory
    limiter = rate_limiter_registry.get_or_create(name, LIMIT)
    assert made == [name] and rate_limiter_registry.get(name) is limiter
    rate_limiter_registry.factory = None
    assert rate_limiter_registry.factory is RateLimiter


def test_a_factory_that_is_not_callable_is_refused():
    with pytest.raises(ConfigTypeError, match="factory must be callable"):
        rate_limiter_registry.factory = "RateLimiter"  # type: ignore[assignment]
    with pytest.raises(ConfigTypeError, match="keyed_factory must be callable"):
        rate_limiter_registry.keyed_factory = 3  # type: ignore[assignment]


def test_install_connects_to_nothing_and_uninstall_restores_the_defaults(name):
    client = install("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert installed() is client
    assert circuit_breaker_registry.factory is not CircuitBreaker
    uninstall()
    assert installed() is None
    assert circuit_breaker_registry.factory is CircuitBreaker
    assert rate_limiter_registry.factory is RateLimiter
    assert rate_limiter_registry.keyed_factory is KeyedRateLimiter


# -- with a redis-server ---------------------------------------------------------------


def test_after_install_the_registries_create_redis_primitives(redis_server: RedisServer, name):
    install(redis_server.url)
    breaker = circuit_breaker_registry.get_or_create(name)
    assert isinstance(breaker, RedisCircuitBreaker)
    breaker.close()
    circuit_breaker_registry.remove(name)
    assert isinstance(rate_limiter_registry.get_or_create(name, LIMIT), RedisRateLimiter)
    keyed = rate_limiter_registry.keyed_factory(LIMIT, name=f"{name}-k", register=False)
    assert isinstance(keyed, RedisKeyedRateLimiter)


def test_the_decorator_shares_its_breaker_through_redis_after_install(
    redis_server: RedisServer, name
):
    install(redis_server.url)

    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1, timeout=60), name=name)
    def work() -> None:
        boom()

    breaker = work.breaker
    assert isinstance(breaker, RedisCircuitBreaker) and breaker.wait_synced(5)
    with pytest.raises(RuntimeError):
        work()
    client = from_url(redis_server.url)
    try:
        assert client.hget(breaker.redis_key, "s") == b"open"
    finally:
        client.close()


def test_a_name_with_braces_stays_in_memory_with_a_warning(redis_server, caplog):
    install(redis_server.url)
    with caplog.at_level(logging.WARNING, logger="resilience.redis"):
        breaker = circuit_breaker_registry.get_or_create("t-{braces}")
        limiter = rate_limiter_registry.get_or_create("t-{braces}", LIMIT)
    try:
        assert type(breaker) is CircuitBreaker and type(limiter) is RateLimiter
        assert "not shared through Redis" in caplog.text
    finally:
        circuit_breaker_registry.remove("t-{braces}")
        rate_limiter_registry.remove("t-{braces}")


# -- observed transitions --------------------------------------------------------------


@pytest.fixture
def pair(redis_server: RedisServer, name) -> Iterator[tuple[RedisCircuitBreaker, ...]]:
    """Two breakers of one name on their own clients: two 'processes'."""
    clients = [from_url(redis_server.url), from_url(redis_server.url)]
    config = CircuitBreakerConfig(failure_threshold=1, timeout=0)
    a = RedisCircuitBreaker(name, config, redis=clients[0])
    circuit_breaker_registry.remove(name)
    b = RedisCircuitBreaker(name, config, redis=clients[1])
    assert a.wait_synced(5) and b.wait_synced(5)
    yield a, b
    a.close()
    b.close()
    for client in clients:
        client.close()


def test_only_the_breaker_that_made_a_transition_publishes_it_unobserved(pair, events):
    a, b = pair
    with pytest.raises(RuntimeError):
        a.call(boom)
    assert eventually(lambda: len([e for e in events if e.to_state == "open"]) == 2)
    opened = [e for e in events if e.to_state == "open"]
    assert sorted(e.observed for e in opened) == [False, True]
    b.reset(actor="carol")
    assert eventually(lambda: len([e for e in events if e.actor == "carol"]) == 2)
    resets = [e for e in events if e.actor == "carol"]
    assert sorted(e.observed for e in resets) == [False, True]


def test_the_timeout_step_to_half_open_is_made_once_across_processes(pair, events):
    a, b = pair
    with pytest.raises(RuntimeError):
        a.call(boom)
    assert eventually(lambda: b._state.value == "open")
    assert a.state.value == "half_open"  # the read makes the step, in Redis
    assert eventually(lambda: b.state.value == "half_open")
    assert eventually(lambda: len([e for e in events if e.to_state == "half_open"]) == 2)
    half = [e for e in events if e.to_state == "half_open"]
    assert sorted(e.observed for e in half) == [False, True]


def test_an_in_memory_breaker_never_marks_its_events_observed(name, events):
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1))
    with pytest.raises(RuntimeError):
        breaker.call(boom)
    assert [e.observed for e in events] == [False]
