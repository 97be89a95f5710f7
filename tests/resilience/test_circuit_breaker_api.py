"""The breaker's surface: config validation, events, snapshot, registry, decorator, async."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import pickle
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.circuit_breaker._core import open_error
from resilience.errors import (
    CircuitBreakerError,
    CircuitOpenError,
    ConfigTypeError,
    ConfigValueError,
    ResilienceError,
)
from resilience.events import BreakerStateChanged, CallRejected, Event, bus
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


def current(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def ok() -> str:
    return "ok"


def boom() -> None:
    raise ConnectionError("connection refused")


def trip(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(boom)


# -- configuration ---------------------------------------------------------------------

BAD_CONFIGS = [
    ({"failure_threshold": 0}, ConfigValueError, "failure_threshold", "0"),
    ({"failure_threshold": 2.5}, ConfigTypeError, "failure_threshold", "2.5"),
    ({"failure_threshold": True}, ConfigTypeError, "failure_threshold", "True"),
    ({"success_threshold": 0}, ConfigValueError, "success_threshold", "0"),
    ({"success_threshold": "2"}, ConfigTypeError, "success_threshold", "'2'"),
    ({"half_open_max_calls": -1}, ConfigValueError, "half_open_max_calls", "-1"),
    ({"timeout": -1}, ConfigValueError, "timeout", "-1"),
    ({"timeout": "60"}, ConfigTypeError, "timeout", "'60'"),
    ({"timeout": float("nan")}, ConfigValueError, "timeout", "nan"),
    ({"timeout": timedelta(seconds=-5)}, ConfigValueError, "timeout", "timedelta"),
    ({"failure_exceptions": "ValueError"}, ConfigTypeError, "failure_exceptions", "ValueError"),
    ({"failure_exceptions": (int,)}, ConfigTypeError, "failure_exceptions", "int"),
    (
        {"failure_exceptions": (KeyboardInterrupt,)},
        ConfigTypeError,
        "failure_exceptions",
        "KeyboardInterrupt",
    ),
    ({"ignored_exceptions": (None,)}, ConfigTypeError, "ignored_exceptions", "None"),
    ({"sliding_window_size": 0}, ConfigValueError, "sliding_window_size", "0"),
    ({"sliding_window_size": 5.0}, ConfigTypeError, "sliding_window_size", "5.0"),
    ({"sliding_window_size": 5, "minimum_calls": 0}, ConfigValueError, "minimum_calls", "0"),
    ({"sliding_window_size": 5, "minimum_calls": 6}, ConfigValueError, "minimum_calls", "6"),
    ({"minimum_calls": 3}, ConfigValueError, "minimum_calls", "sliding_window_size"),
    (
        {"failure_rate_threshold": 40},
        ConfigValueError,
        "failure_rate_threshold",
        "sliding_window_size",
    ),
    (
        {"sliding_window_size": 5, "failure_rate_threshold": 0},
        ConfigValueError,
        "failure_rate_threshold",
        "0",
    ),
    (
        {"sliding_window_size": 5, "failure_rate_threshold": 100.5},
        ConfigValueError,
        "failure_rate_threshold",
        "100.5",
    ),
    (
        {"sliding_window_size": 5, "failure_rate_threshold": "50"},
        ConfigTypeError,
        "failure_rate_threshold",
        "'50'",
    ),
    ({"slow_call_duration": 0}, ConfigValueError, "slow_call_duration", "0"),
    ({"slow_call_duration": -2.0}, ConfigValueError, "slow_call_duration", "-2.0"),
    ({"slow_call_duration": "1s"}, ConfigTypeError, "slow_call_duration", "'1s'"),
    ({"call_timeout": 0}, ConfigValueError, "call_timeout", "0"),
    ({"call_timeout": -1}, ConfigValueError, "call_timeout", "-1"),
    ({"call_timeout": "5s"}, ConfigTypeError, "call_timeout", "'5s'"),
]


@pytest.mark.parametrize(("kwargs", "error", "field", "shown"), BAD_CONFIGS)
def test_invalid_config_raises_naming_field_and_value(
    kwargs: dict[str, Any], error: type[Exception], field: str, shown: str
) -> None:
    with pytest.raises(error) as info:
        CircuitBreakerConfig(**kwargs)
    assert field in str(info.value)
    assert shown in str(info.value)


def test_config_errors_are_also_builtin_value_and_type_errors() -> None:
    with pytest.raises(ValueError):
        CircuitBreakerConfig(failure_threshold=0)
    with pytest.raises(TypeError):
        CircuitBreakerConfig(timeout="soon")  # type: ignore[arg-type]


def test_config_defaults_match_the_documented_contract() -> None:
    config = CircuitBreakerConfig()
    assert (config.failure_threshold, config.success_threshold) == (5, 2)
    assert (config.timeout, config.half_open_max_calls) == (60.0, 3)
    assert config.failure_exceptions == (Exception,)
    assert config.ignored_exceptions == ()
    assert config.sliding_window_size is None
    assert config.slow_call_duration is None


def test_config_normalises_durations_and_rate_rule_defaults() -> None:
    config = CircuitBreakerConfig(
        timeout=timedelta(minutes=2),
        slow_call_duration=timedelta(milliseconds=250),
        sliding_window_size=20,
        failure_exceptions=ConnectionError,  # type: ignore[arg-type]
    )
    assert config.timeout == 120.0
    assert config.slow_call_duration == 0.25
    assert (config.minimum_calls, config.failure_rate_threshold) == (20, 50.0)
    assert config.failure_exceptions == (ConnectionError,)


def test_config_accepts_timeout_zero_and_is_frozen() -> None:
    config = CircuitBreakerConfig(timeout=0)
    assert config.timeout == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 5  # type: ignore[misc]


def test_config_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CircuitBreakerConfig(5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "shown"),
    [
        ((1,), {}, ConfigTypeError, "name"),
        (("",), {}, ConfigValueError, "name"),
        (("svc", {"failure_threshold": 1}), {}, ConfigTypeError, "config"),
        (("svc",), {"clock": 5.0}, ConfigTypeError, "clock"),
        (("svc",), {"wall_clock": None}, ConfigTypeError, "wall_clock"),
    ],
)
def test_invalid_breaker_arguments_raise(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=shown):
        CircuitBreaker(*args, **kwargs)
    assert "svc" not in circuit_breaker_registry


# -- errors and events -----------------------------------------------------------------


def test_circuit_open_error_carries_fields_and_pickles(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=30)
    trip(breaker)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    error = info.value
    assert isinstance(error, CircuitBreakerError)
    assert isinstance(error, ResilienceError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CircuitOpenError
    assert (copy.name, copy.remaining, str(copy)) == ("svc", 30.0, str(error))
    assert str(error) == "circuit breaker 'svc' is open until 2023-11-14T22:15:30.000+00:00"


def test_fast_open_error_equals_the_constructed_one() -> None:
    fast = open_error("svc", 1.5, "message")
    built = CircuitOpenError("svc", 1.5, "message")
    assert type(fast) is type(built)
    assert (fast.args, vars(fast), str(fast)) == (built.args, vars(built), str(built))


def test_forced_open_and_full_half_open_errors_use_the_standard_messages(
    clock: FakeClock,
) -> None:
    breaker = make(clock)
    breaker.force_open()
    with pytest.raises(CircuitOpenError, match="forced open"):
        breaker.call(ok)


def test_trip_publishes_a_state_change_with_reason_and_counts(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=5)
    events: list[Event] = []
    breaker.add_listener(events.append)
    trip(breaker, 5)
    assert events == [
        BreakerStateChanged(
            name="svc",
            time=clock.wall(),
            from_state="closed",
            to_state="open",
            reason="failure_threshold reached (5 consecutive failures)",
            failure_count=5,
            failure_rate=None,
        )
    ]


def test_rejection_publishes_call_rejected(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=10)
    trip(breaker)
    clock.advance(4)
    events: list[Event] = []
    breaker.add_listener(events.append)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert events == [CallRejected(name="svc", time=clock.wall(), state="open", remaining=6.0)]


def test_events_reach_the_process_wide_bus(clock: FakeClock) -> None:
    breaker = make(clock, name="bus-svc", failure_threshold=1)
    seen: list[Event] = []
    unsubscribe = bus.subscribe(seen.append)
    try:
        trip(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
    finally:
        unsubscribe()
    mine = [e for e in seen if e.name == "bus-svc"]
    assert [type(e) for e in mine] == [BreakerStateChanged, CallRejected]


def test_listener_errors_do_not_reach_the_caller(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    events: list[Event] = []
    breaker.add_listener(broken)
    breaker.add_listener(events.append)
    trip(breaker)  # raises ConnectionError, not RuntimeError
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert breaker.listener_errors == 2
    assert len(events) == 2  # later listeners still ran


def test_removed_listener_gets_nothing_more(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    events: list[Event] = []
    breaker.add_listener(events.append)
    breaker.remove_listener(events.append)
    breaker.remove_listener(events.append)  # removing twice is fine
    trip(breaker)
    assert events == []
    with pytest.raises(TypeError):
        breaker.add_listener("not callable")  # type: ignore[arg-type]


def test_listener_may_act_on_the_breaker_and_events_stay_in_order(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    events: list[Event] = []

    def auto_reset(event: Event) -> None:
        events.append(event)
        if isinstance(event, BreakerStateChanged) and event.to_state == "open":
            breaker.reset(actor="listener")

    breaker.add_listener(auto_reset)
    trip(breaker)
    assert [(e.from_state, e.to_state) for e in events] == [  # type: ignore[attr-defined]
        ("closed", "open"),
        ("open", "closed"),
    ]
    assert current(breaker) is CircuitState.CLOSED


# -- snapshot --------------------------------------------------------------------------


def test_snapshot_of_a_fresh_breaker(clock: FakeClock) -> None:
    breaker = make(clock, ignored_exceptions=(KeyError,), sliding_window_size=10)
    assert breaker.snapshot() == {
        "name": "svc",
        "state": "closed",
        "failure_count": 0,
        "success_count": 0,
        "failure_rate": None,
        "opened_at": None,
        "seconds_until_half_open": None,
        "last_failure": None,
        "half_open_calls_in_flight": 0,
        "half_open_max_calls": 3,
        "window": {"size": 10, "calls": 0, "failed": 0},
        "calls": {"successful": 0, "failed": 0, "rejected": 0, "ignored": 0, "slow": 0},
        "config": {
            "failure_threshold": 5,
            "success_threshold": 2,
            "timeout": 60.0,
            "half_open_max_calls": 3,
            "failure_exceptions": ["Exception"],
            "ignored_exceptions": ["KeyError"],
            "sliding_window_size": 10,
            "minimum_calls": 10,
            "failure_rate_threshold": 50.0,
            "slow_call_duration": None,
            "call_timeout": None,
        },
    }


def test_snapshot_of_an_open_breaker(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2, timeout=60)
    breaker.call(ok)
    trip(breaker, 2)
    opened = clock.wall()
    clock.advance(15)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "open"
    assert snapshot["opened_at"] == opened
    assert snapshot["seconds_until_half_open"] == 45.0
    assert snapshot["last_failure"] == {
        "type": "ConnectionError",
        "message": "connection refused",
        "time": opened,
    }
    assert snapshot["calls"] == {
        "successful": 1,
        "failed": 2,
        "rejected": 1,
        "ignored": 0,
        "slow": 0,
    }


def test_snapshot_does_the_lazy_half_open_step(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=5)
    trip(breaker)
    clock.advance(5)
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "half_open"
    assert snapshot["seconds_until_half_open"] is None


def test_snapshot_names_non_builtin_exception_types_by_qualified_name(clock: FakeClock) -> None:
    breaker = make(clock, failure_exceptions=(CircuitOpenError,))
    assert breaker.snapshot()["config"]["failure_exceptions"] == [
        "resilience.errors.CircuitOpenError"
    ]


# -- registry ----------------------------------------------------------------------------


def test_breakers_register_themselves_and_duplicates_are_refused(clock: FakeClock) -> None:
    breaker = make(clock, name="reg-a")
    assert circuit_breaker_registry.get("reg-a") is breaker
    assert breaker in circuit_breaker_registry.all()
    with pytest.raises(ValueError, match="get_or_create"):
        make(clock, name="reg-a")
    assert circuit_breaker_registry.get("reg-a") is breaker


def test_get_or_create_returns_the_existing_breaker_as_it_is(clock: FakeClock) -> None:
    first = circuit_breaker_registry.get_or_create("reg-b", CircuitBreakerConfig(timeout=1))
    again = circuit_breaker_registry.get_or_create("reg-b", CircuitBreakerConfig(timeout=99))
    assert again is first
    assert again.config.timeout == 1.0
    assert circuit_breaker_registry.get("missing") is None


def test_get_or_create_from_many_threads_makes_one_breaker() -> None:
    results: list[CircuitBreaker] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait(5)
        results.append(circuit_breaker_registry.get_or_create("reg-race"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_removed_name_can_be_reused(clock: FakeClock) -> None:
    first = make(clock, name="reg-c")
    assert circuit_breaker_registry.remove("reg-c") is first
    assert make(clock, name="reg-c") is not first


# -- decorator and async -------------------------------------------------------------------


def test_decorator_names_the_breaker_after_the_function_and_keeps_metadata() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1))
    def fetch(x: int) -> int:
        """Fetch x."""
        if x < 0:
            raise ConnectionError("down")
        return x * 2

    name = f"{__name__}.{fetch.__qualname__}"
    assert fetch.breaker.name == name
    assert circuit_breaker_registry.get(name) is fetch.breaker
    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch x.")
    assert fetch(2) == 4
    with pytest.raises(ConnectionError):
        fetch(-1)
    with pytest.raises(CircuitOpenError):
        fetch(2)


def test_decorators_with_the_same_name_share_one_breaker() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1), name="shared-dep")
    def read() -> None:
        raise ConnectionError("down")

    @circuit_breaker(name="shared-dep")
    def write() -> str:
        return "written"

    assert read.breaker is write.breaker
    with pytest.raises(ConnectionError):
        read()
    with pytest.raises(CircuitOpenError):
        write()


def test_decorated_function_rejects_with_events_and_recovers_via_half_open(
    clock: FakeClock,
) -> None:
    breaker = make(clock, name="dep", failure_threshold=1, timeout=5, success_threshold=1)
    events: list[Event] = []
    breaker.add_listener(events.append)

    @circuit_breaker(name="dep")
    def fetch(fail: bool = False) -> str:
        if fail:
            raise ConnectionError("down")
        return "fetched"

    with pytest.raises(ConnectionError):
        fetch(fail=True)
    with pytest.raises(CircuitOpenError) as info:
        fetch()
    assert info.value.remaining == 5.0
    clock.advance(5)
    assert fetch() == "fetched"
    assert [type(e).__name__ for e in events] == [
        "BreakerStateChanged",
        "CallRejected",
        "BreakerStateChanged",
        "BreakerStateChanged",
    ]
    assert current(breaker) is CircuitState.CLOSED


def test_decorated_function_applies_the_rate_rule() -> None:
    config = CircuitBreakerConfig(failure_threshold=50, sliding_window_size=2)

    @circuit_breaker(config)
    def flaky(fail: bool) -> None:
        if fail:
            raise ConnectionError("down")

    flaky(False)
    with pytest.raises(ConnectionError):
        flaky(True)
    assert current(flaky.breaker) is CircuitState.OPEN


def test_decorator_works_on_methods() -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @circuit_breaker(name="client-get")
        def get(self, path: str) -> str:
            self.calls += 1
            return f"GET {path}"

    client = Client()
    assert client.get("/x") == "GET /x"
    assert client.calls == 1


def test_decorator_without_parentheses_is_a_clear_error() -> None:
    with pytest.raises(ConfigTypeError, match="parentheses"):
        circuit_breaker(ok)  # type: ignore[arg-type]


async def test_decorated_coroutine_function_stays_a_coroutine_function() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1))
    async def fetch(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise ConnectionError("down")
        return "fetched"

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(False) == "fetched"
    with pytest.raises(ConnectionError):
        await fetch(True)
    with pytest.raises(CircuitOpenError):
        await fetch(False)


async def test_acall_goes_through_half_open_back_to_closed(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=3, success_threshold=1)

    async def fetch(value: str) -> str:
        await asyncio.sleep(0)
        return value

    async def fail() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await breaker.acall(fail)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.acall(fetch, "x")
    assert info.value.remaining == 3.0
    clock.advance(3)
    assert await breaker.acall(fetch, value="y") == "y"
    assert current(breaker) is CircuitState.CLOSED


async def test_cancelled_trial_is_not_a_failure_and_frees_its_slot(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, timeout=1, half_open_max_calls=1)
    trip(breaker)
    clock.advance(1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.acall(hang))
    await started.wait()
    with pytest.raises(CircuitOpenError):  # the only slot is taken
        await breaker.acall(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert current(breaker) is CircuitState.HALF_OPEN
    assert await breaker.acall(asyncio.sleep, 0, "free") == "free"
