"""call_timeout, the half-open trial cap across periods, and unregistered breakers."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from resilience import CallTimeoutError as PublicCallTimeoutError
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import CallTimeoutError, CircuitBreakerError, CircuitOpenError
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


def boom() -> None:
    raise ConnectionError("refused")


# -- call_timeout ----------------------------------------------------------------------


def test_call_timeout_accepts_timedelta_and_is_in_to_dict() -> None:
    config = CircuitBreakerConfig(call_timeout=timedelta(milliseconds=1500))
    assert config.call_timeout == 1.5
    assert config.to_dict()["call_timeout"] == 1.5
    assert CircuitBreakerConfig().call_timeout is None


def test_call_timeout_error_is_a_breaker_error_and_a_timeout_error_and_pickles() -> None:
    exc = CallTimeoutError("svc", 2.0)
    assert isinstance(exc, CircuitBreakerError)
    assert isinstance(exc, TimeoutError)
    assert PublicCallTimeoutError is CallTimeoutError
    again = pickle.loads(pickle.dumps(exc))
    assert (type(again), again.name, again.timeout, str(again)) == (
        CallTimeoutError,
        "svc",
        2.0,
        str(exc),
    )


def test_sync_call_over_call_timeout_is_a_failure_and_its_result_is_discarded(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=2, call_timeout=5)

    def slow() -> str:
        clock.advance(5)
        return "late"

    for _ in range(2):
        with pytest.raises(CallTimeoutError) as info:
            breaker.call(slow)
        assert (info.value.name, info.value.timeout) == ("svc", 5.0)
    assert breaker.state is CircuitState.OPEN
    snapshot = breaker.snapshot()
    assert snapshot["calls"]["failed"] == 2
    assert snapshot["last_failure"]["type"] == "resilience.errors.CallTimeoutError"


def test_sync_call_under_call_timeout_returns_normally(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, call_timeout=5)

    def quick() -> str:
        clock.advance(4.9)
        return "ok"

    assert breaker.call(quick) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_timeout_counts_as_failure_even_when_failure_exceptions_exclude_it(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=1, call_timeout=1, failure_exceptions=(KeyError,))

    def slow() -> None:
        clock.advance(2)

    with pytest.raises(CallTimeoutError):
        breaker.call(slow)
    assert breaker.state is CircuitState.OPEN


async def test_async_calls_hung_past_call_timeout_are_cancelled_and_open_the_breaker(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=5, call_timeout=0.01)
    cancelled = 0

    async def hang() -> None:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise

    for _ in range(5):
        with pytest.raises(CallTimeoutError):
            await breaker.acall(hang)
    assert cancelled == 5
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.acall(hang)


async def test_decorated_coroutine_uses_call_timeout(clock: FakeClock) -> None:
    make(clock, "deco", failure_threshold=1, call_timeout=0.01)

    @circuit_breaker(name="deco")
    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(CallTimeoutError):
        await hang()
    assert hang.breaker.state is CircuitState.OPEN


async def test_outside_cancellation_stays_ignored_with_call_timeout_set(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=1, call_timeout=60)

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(3):
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.01):
                await breaker.acall(hang)
        assert not isinstance(info.value, CallTimeoutError)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["calls"]["ignored"] == 3


async def test_own_timeout_error_of_the_call_is_an_ordinary_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, call_timeout=60)

    async def raises_timeout() -> None:
        raise TimeoutError("the client library's own timeout")

    with pytest.raises(TimeoutError) as info:
        await breaker.acall(raises_timeout)
    assert not isinstance(info.value, CallTimeoutError)
    assert breaker.state is CircuitState.OPEN


# -- half-open trials across periods -------------------------------------------------


async def test_trials_hung_in_earlier_half_open_periods_still_count_against_the_cap(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=1, timeout=10, half_open_max_calls=3)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    release = asyncio.Event()
    hung: list[asyncio.Task[None]] = []

    async def hang() -> None:
        await release.wait()

    for _period in range(4):
        # Each period: two trials hang, a third one fails and reopens the breaker.
        clock.advance(10)
        for _ in range(2):
            task = asyncio.create_task(breaker.acall(hang))
            await asyncio.sleep(0)
            hung.append(task)
        with pytest.raises((ConnectionError, CircuitOpenError)):
            breaker.call(boom)
    running = [task for task in hung if not task.done()]
    rejected = [task for task in hung if task.done()]
    assert len(running) == 3  # never more than half_open_max_calls at once
    assert all(isinstance(task.exception(), CircuitOpenError) for task in rejected)
    assert breaker.snapshot()["half_open_calls_in_flight"] == 3
    release.set()
    await asyncio.gather(*running)


def test_a_late_trial_from_an_earlier_period_frees_its_slot_but_changes_nothing_else(
    clock: FakeClock,
) -> None:
    breaker = make(clock, failure_threshold=1, timeout=10, half_open_max_calls=2)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(10)
    generation = breaker._admit()  # a trial that hangs (taken by hand)
    with pytest.raises(ConnectionError):  # the second slot: fails, reopens
        breaker.call(boom)
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.snapshot()["half_open_calls_in_flight"] == 1
    breaker._admit()  # one slot left for this period
    with pytest.raises(CircuitOpenError):
        breaker._admit()
    breaker._on_success(generation, None)  # the old trial ends: slot back, no success
    assert breaker.snapshot()["success_count"] == 0
    assert breaker.snapshot()["half_open_calls_in_flight"] == 1
    breaker._admit()


def test_operator_reset_forgets_trials_of_earlier_periods(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=10, half_open_max_calls=1)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(10)
    breaker._admit()  # hangs forever
    breaker.force_open()
    breaker.reset()
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    clock.advance(10)
    assert breaker.call(lambda: "trial") == "trial"


# -- register=False -------------------------------------------------------------------


def test_unregistered_breaker_stays_out_of_the_registry_and_may_share_a_name(
    clock: FakeClock,
) -> None:
    registered = make(clock, "shared-name")
    private = CircuitBreaker("shared-name", CircuitBreakerConfig(), register=False)
    other = CircuitBreaker("private-only", register=False)
    assert circuit_breaker_registry.get("shared-name") is registered
    assert circuit_breaker_registry.get("private-only") is None
    assert private is not registered
    assert other.call(lambda: 1) == 1
