from __future__ import annotations

import asyncio
import math
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError, ResilienceError
from resilience.events import Event, RateLimitRejected, bus
from resilience.rate_limiter import (
    KeyedRateLimiter,
    RateLimitConfig,
    RateLimiter,
    rate_limiter_registry,
)
from tests.clock import FakeClock


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    rate_limiter_registry.clear()
    yield
    rate_limiter_registry.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []
    unsubscribe = bus.subscribe(seen.append)
    yield seen
    unsubscribe()


def limiter(
    clock: FakeClock, max_requests: int = 2, time_window: float = 1.0, burst_size: int = 0
) -> RateLimiter:
    return RateLimiter(
        RateLimitConfig(max_requests=max_requests, time_window=time_window, burst_size=burst_size),
        name="api",
        clock=clock,
        sleep=clock.sleep,
        async_sleep=clock.async_sleep,
    )


# --- config ----------------------------------------------------------------------


def test_config_derives_capacity_and_rate() -> None:
    config = RateLimitConfig(max_requests=100, time_window=60, burst_size=20)
    assert config.capacity == 120
    assert config.rate == pytest.approx(100 / 60)
    assert config.window_seconds == 60.0


def test_config_accepts_timedelta_and_stores_seconds() -> None:
    config = RateLimitConfig(max_requests=10, time_window=timedelta(minutes=1))
    assert config.time_window == 60.0
    assert config == RateLimitConfig(max_requests=10, time_window=60)


def test_config_is_frozen_and_keyword_only() -> None:
    config = RateLimitConfig(max_requests=1, time_window=1)
    with pytest.raises(AttributeError):
        config.max_requests = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        RateLimitConfig(1, 1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_requests", 0, ConfigValueError),
        ("max_requests", -5, ConfigValueError),
        ("max_requests", True, ConfigTypeError),
        ("max_requests", 1.5, ConfigTypeError),
        ("max_requests", "10", ConfigTypeError),
        ("max_requests", None, ConfigTypeError),
        ("time_window", 0, ConfigValueError),
        ("time_window", -1.0, ConfigValueError),
        ("time_window", math.nan, ConfigValueError),
        ("time_window", math.inf, ConfigValueError),
        ("time_window", timedelta(0), ConfigValueError),
        ("time_window", timedelta(seconds=-3), ConfigValueError),
        ("time_window", True, ConfigTypeError),
        ("time_window", "60", ConfigTypeError),
        ("burst_size", -1, ConfigValueError),
        ("burst_size", False, ConfigTypeError),
        ("burst_size", 2.0, ConfigTypeError),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(
    field: str, value: object, error: type[Exception]
) -> None:
    kwargs: dict[str, object] = {"max_requests": 10, "time_window": 60, "burst_size": 0}
    kwargs[field] = value
    with pytest.raises(error) as info:
        RateLimitConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ResilienceError)
    assert field in str(info.value)
    assert repr(value) in str(info.value)


# --- allow, reject, refill ---------------------------------------------------------


def test_full_bucket_admits_capacity_then_refuses(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=3, burst_size=2)
    assert [lim.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert (lim.allowed, lim.rejected) == (5, 1)


def test_tokens_refill_at_the_configured_rate(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    assert lim.try_acquire() and lim.try_acquire()
    assert not lim.try_acquire()
    clock.advance(0.25)
    assert lim.available_tokens() == pytest.approx(0.5)
    assert not lim.try_acquire()
    clock.advance(0.25)
    assert lim.try_acquire()
    assert not lim.try_acquire()


def test_refill_stops_at_capacity(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, burst_size=1)
    assert lim.try_acquire(3)
    clock.advance(3600)
    assert lim.available_tokens() == 3
    assert [lim.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_many_tokens_are_all_or_nothing(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=5)
    assert lim.try_acquire(4)
    assert not lim.try_acquire(2)
    assert lim.available_tokens() == 1
    assert (lim.allowed, lim.rejected) == (1, 1)


def test_retry_after_is_zero_when_available_else_time_to_refill(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=4, time_window=2.0)  # 2 tokens/s
    assert lim.retry_after() == 0.0
    assert lim.try_acquire(4)
    assert lim.retry_after() == pytest.approx(0.5)
    assert lim.retry_after(3) == pytest.approx(1.5)
    clock.advance(0.5)
    assert lim.retry_after() == 0.0


@pytest.mark.parametrize("method", ["try_acquire", "acquire", "retry_after"])
@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        (0, ConfigValueError),
        (-1, ConfigValueError),
        (4, ConfigValueError),
        (1.0, ConfigTypeError),
        (True, ConfigTypeError),
        ("1", ConfigTypeError),
        (None, ConfigTypeError),
    ],
)
def test_bad_token_counts_raise_naming_tokens(
    clock: FakeClock, method: str, tokens: object, error: type[Exception]
) -> None:
    lim = limiter(clock, max_requests=3)
    with pytest.raises(error, match="tokens") as info:
        getattr(lim, method)(tokens)
    assert repr(tokens) in str(info.value)
    assert (lim.allowed, lim.rejected) == (0, 0)


def test_constructor_rejects_a_non_config_and_bad_names(clock: FakeClock) -> None:
    with pytest.raises(ConfigTypeError, match="config"):
        RateLimiter({"max_requests": 1})  # type: ignore[arg-type]
    config = RateLimitConfig(max_requests=1, time_window=1)
    with pytest.raises(ConfigValueError, match="name"):
        RateLimiter(config, name="")
    with pytest.raises(ConfigTypeError, match="name"):
        RateLimiter(config, name=7)  # type: ignore[arg-type]


# --- acquire: waiting with injected sleep ------------------------------------------


def test_acquire_sleeps_until_tokens_refill(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    lim.acquire(2)
    lim.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    lim.acquire(2)
    assert clock.sleeps[1:] == [pytest.approx(1.0)]
    assert (lim.allowed, lim.rejected) == (3, 0)


def test_acquire_with_an_awkward_rate_on_a_late_clock_ends_after_the_right_wait() -> None:
    clock = FakeClock(now=3e6 + 0.1)  # a month of uptime: float steps are coarser
    lim = RateLimiter(
        RateLimitConfig(max_requests=3, time_window=7.0), clock=clock, sleep=clock.sleep
    )
    for _ in range(20):
        lim.acquire()
    assert sum(clock.sleeps) == pytest.approx(17 * 7 / 3)
    assert len(clock.sleeps) <= 2 * 17  # no spinning on rounding leftovers
    assert lim.allowed == 20


def test_acquire_does_not_hold_the_lock_while_sleeping(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=1)
    held: list[bool] = []

    def sleep(seconds: float) -> None:
        held.append(lim._lock.locked())
        clock.sleep(seconds)

    lim._sleep = sleep
    lim.acquire()
    lim.acquire()
    assert held == [False]


def test_acquire_times_out_at_once_with_retry_after(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    lim.acquire(2)
    with pytest.raises(RateLimitError) as info:
        lim.acquire(timeout=0.4)
    assert info.value.retry_after == pytest.approx(0.5)
    assert info.value.name == "api"
    assert clock.sleeps == []  # no point sleeping 0.4 s for a 0.5 s wait
    assert (lim.allowed, lim.rejected) == (1, 1)


def test_acquire_with_enough_timeout_waits(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    lim.acquire(2)
    lim.acquire(timeout=timedelta(milliseconds=500))
    assert clock.sleeps == [pytest.approx(0.5)]


def test_acquire_timeout_zero_means_do_not_wait(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=1)
    lim.acquire(timeout=0)
    with pytest.raises(RateLimitError):
        lim.acquire(timeout=0)
    assert clock.sleeps == []


@pytest.mark.parametrize("timeout", [-1, math.nan, "1"])
def test_acquire_rejects_bad_timeouts(clock: FakeClock, timeout: object) -> None:
    with pytest.raises((ConfigValueError, ConfigTypeError), match="timeout"):
        limiter(clock).acquire(timeout=timeout)  # type: ignore[arg-type]


def test_a_waiters_tokens_cannot_be_taken_by_another_caller_during_its_sleep(
    clock: FakeClock,
) -> None:
    lim = limiter(clock, max_requests=1)
    lim.acquire()
    others: list[bool] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        others.append(lim.try_acquire())  # the refilled token is the waiter's

    lim._sleep = sleep
    lim.acquire()
    assert others == [False]
    assert clock.sleeps == [pytest.approx(1.0)]


async def test_aacquire_waits_with_the_injected_async_sleep(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    await lim.aacquire(2)
    await lim.aacquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    with pytest.raises(RateLimitError) as info:
        await lim.aacquire(2, timeout=0)
    assert info.value.retry_after == pytest.approx(1.0)
    assert (lim.allowed, lim.rejected) == (2, 1)


async def test_aacquire_uses_asyncio_sleep_by_default() -> None:
    lim = RateLimiter(RateLimitConfig(max_requests=1, time_window=0.02))
    await lim.aacquire()
    started = time.monotonic()
    # Another task runs while we wait: the loop is not blocked.
    other = asyncio.create_task(asyncio.sleep(0))
    await lim.aacquire()
    assert other.done()
    assert time.monotonic() - started >= 0.015


# --- snapshot, registry ----------------------------------------------------------


def test_snapshot_has_what_the_dashboard_shows(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=10, time_window=5.0, burst_size=2)
    lim.try_acquire(3)
    lim.try_acquire(12)
    assert lim.snapshot() == {
        "name": "api",
        "kind": "bucket",
        "max_requests": 10,
        "time_window": 5.0,
        "burst_size": 2,
        "capacity": 12,
        "rate": 2.0,
        "available_tokens": 9.0,
        "allowed": 1,
        "rejected": 1,
    }


def test_named_limiter_registers_itself_and_unnamed_does_not(clock: FakeClock) -> None:
    named = limiter(clock)
    RateLimiter(RateLimitConfig(max_requests=1, time_window=1))
    RateLimiter(RateLimitConfig(max_requests=1, time_window=1), name="quiet", register=False)
    assert rate_limiter_registry.get("api") is named
    assert rate_limiter_registry.all() == [named]


def test_a_taken_name_raises_and_keeps_the_first(clock: FakeClock) -> None:
    first = limiter(clock)
    with pytest.raises(ConfigValueError, match="'api' is already registered"):
        limiter(clock)
    with pytest.raises(ConfigValueError, match="already registered"):
        KeyedRateLimiter(RateLimitConfig(max_requests=1, time_window=1), name="api")
    assert rate_limiter_registry.get("api") is first


def test_get_or_create_returns_the_existing_limiter_as_is() -> None:
    config = RateLimitConfig(max_requests=5, time_window=1)
    created = rate_limiter_registry.get_or_create("svc", config)
    assert isinstance(created, RateLimiter)
    assert created.name == "svc" and created.config == config
    other = RateLimitConfig(max_requests=50, time_window=1)
    assert rate_limiter_registry.get_or_create("svc", other) is created
    keyed = KeyedRateLimiter(other, name="per-user")
    assert rate_limiter_registry.get_or_create("per-user", config) is keyed
    assert rate_limiter_registry.all() == [keyed, created]  # sorted by name
    assert rate_limiter_registry.get("missing") is None


def test_get_or_create_validates_config_and_name() -> None:
    with pytest.raises(ConfigTypeError, match="config"):
        rate_limiter_registry.get_or_create("svc", "10/s")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        rate_limiter_registry.get_or_create("", RateLimitConfig(max_requests=1, time_window=1))
    assert len(rate_limiter_registry) == 0


def test_get_or_create_from_many_threads_creates_one_limiter() -> None:
    config = RateLimitConfig(max_requests=5, time_window=1)
    barrier = threading.Barrier(8)
    got: list[object] = []

    def create() -> None:
        barrier.wait()
        got.append(rate_limiter_registry.get_or_create("shared", config))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in got}) == 1


# --- events, errors ---------------------------------------------------------------


def test_rejection_publishes_an_event_when_someone_listens(
    clock: FakeClock, events: list[Event]
) -> None:
    lim = limiter(clock, max_requests=2, time_window=1.0)
    assert lim.try_acquire(2)
    assert events == []  # admitting publishes nothing
    assert not lim.try_acquire()
    assert not lim.try_acquire(2)
    with pytest.raises(RateLimitError):
        lim.acquire(timeout=0)
    assert [type(e) for e in events] == [RateLimitRejected] * 3
    first, second, _ = events
    assert isinstance(first, RateLimitRejected) and isinstance(second, RateLimitRejected)
    assert (first.name, first.tokens, first.key) == ("api", 1, None)
    assert first.retry_after == pytest.approx(0.5)
    assert second.tokens == 2
    assert second.retry_after == pytest.approx(1.0)
    assert first.time == pytest.approx(time.time(), abs=5)


def test_rejection_publishes_nothing_without_listeners(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[object] = []
    monkeypatch.setattr(type(bus), "publish", lambda self, event: published.append(event))
    # The dashboard app subscribes recorders when Django is set up: start with none.
    monkeypatch.setattr(bus, "_listeners", ())
    monkeypatch.setattr(bus, "_wanted", frozenset())
    lim = limiter(clock, max_requests=1)
    lim.try_acquire()
    assert not bus.active
    assert not lim.try_acquire()
    assert published == []
    unsubscribe = bus.subscribe(lambda event: None)
    try:
        assert not lim.try_acquire()
    finally:
        unsubscribe()
    assert len(published) == 1


def test_rate_limit_error_pickles_with_its_fields(clock: FakeClock) -> None:
    lim = limiter(clock, max_requests=1)
    lim.acquire()
    with pytest.raises(RateLimitError) as info:
        lim.acquire(timeout=0)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is RateLimitError
    assert (copy.retry_after, copy.name) == (info.value.retry_after, "api")
    assert str(copy) == str(info.value)
    assert "'api'" in str(copy) and "retry in 1.000s" in str(copy)


# --- concurrency and the admission bound -------------------------------------------


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    # CPython switches threads every 5 ms by default, which hides most races: switch
    # about every microsecond so that an unlocked read-modify-write really interleaves.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("eager_thread_switching")
def test_eight_threads_never_get_more_than_capacity_plus_refill() -> None:
    config = RateLimitConfig(max_requests=20_000, time_window=1.0, burst_size=1_000)
    started = time.monotonic()
    lim = RateLimiter(config)
    barrier = threading.Barrier(8)
    admitted = [0] * 8
    calls = [0] * 8

    def hammer(slot: int) -> None:
        barrier.wait()
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            calls[slot] += 1
            if lim.try_acquire():
                admitted[slot] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    assert sum(admitted) <= config.capacity + elapsed * config.rate
    assert sum(admitted) >= config.capacity  # it really was drained
    assert lim.allowed == sum(admitted)  # no lost counter updates
    assert lim.allowed + lim.rejected == sum(calls)
    assert lim.rejected > 0


def assert_token_bucket_bound(
    config: RateLimitConfig, times: list[float], taken: list[int]
) -> None:
    """Over every stretch of steps, at most capacity + its duration x rate were admitted.

    (From the start it is the plain bound; over later stretches it also proves that
    idle time never banks more than ``capacity`` tokens.)
    """
    prefix = [0]
    for tokens in taken:
        prefix.append(prefix[-1] + tokens)
    for first in range(len(times)):
        for last in range(first, len(times)):
            admitted = prefix[last + 1] - prefix[first]
            bound = config.capacity + (times[last] - times[first]) * config.rate
            assert admitted <= bound + 1e-9 * bound, (first, last, admitted, bound)


@settings(max_examples=200, deadline=None)
@given(
    max_requests=st.integers(1, 50),
    time_window=st.floats(0.01, 100.0),
    burst_size=st.integers(0, 20),
    steps=st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 70)), max_size=60),
)
def test_bucket_never_admits_more_than_capacity_plus_elapsed_times_rate(
    max_requests: int, time_window: float, burst_size: int, steps: list[tuple[float, int]]
) -> None:
    config = RateLimitConfig(
        max_requests=max_requests, time_window=time_window, burst_size=burst_size
    )
    clock = FakeClock(now=12_345.678)
    lim = RateLimiter(config, clock=clock)
    times: list[float] = []
    taken: list[int] = []
    for advance, wanted in steps:
        clock.advance(advance)
        tokens = min(wanted, config.capacity)
        predicted = lim.retry_after(tokens) == 0.0
        got = lim.try_acquire(tokens)
        assert got is predicted
        times.append(clock.now)
        taken.append(tokens if got else 0)
        assert -1e-9 <= lim.available_tokens() <= config.capacity
    assert_token_bucket_bound(config, times, taken)
    assert lim.allowed + lim.rejected == len(steps)
