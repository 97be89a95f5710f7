from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError
from resilience.events import Event, RateLimitRejected, bus
from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, rate_limiter_registry
from tests.clock import FakeClock


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    rate_limiter_registry.clear()
    yield
    rate_limiter_registry.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(500.0)


def keyed(
    clock: FakeClock, max_requests: int = 2, time_window: float = 1.0, max_keys: int = 100
) -> KeyedRateLimiter:
    return KeyedRateLimiter(
        RateLimitConfig(max_requests=max_requests, time_window=time_window),
        name="per-user",
        max_keys=max_keys,
        clock=clock,
        sleep=clock.sleep,
        async_sleep=clock.async_sleep,
    )


def test_each_key_has_its_own_bucket(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=2)
    assert [lim.try_acquire("alice") for _ in range(3)] == [True, True, False]
    assert lim.try_acquire("bob")
    assert lim.try_acquire(("tenant", 7), 2)
    assert (lim.allowed, lim.rejected, lim.key_count) == (4, 1, 3)
    clock.now += 0.5
    assert lim.try_acquire("alice")
    assert not lim.try_acquire("alice")


def test_unknown_keys_have_a_full_bucket_and_are_not_stored(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=4, time_window=2.0)
    assert lim.available_tokens("nobody") == 4
    assert lim.retry_after("nobody", 4) == 0.0
    assert lim.key_count == 0
    assert lim.try_acquire("carol", 4)
    assert lim.available_tokens("carol") == 0
    assert lim.retry_after("carol", 3) == pytest.approx(1.5)


def test_bad_arguments_raise_naming_them(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=2)
    with pytest.raises(ConfigValueError, match="tokens"):
        lim.try_acquire("k", 3)
    with pytest.raises(ConfigTypeError, match="tokens"):
        lim.try_acquire("k", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unhashable"):
        lim.try_acquire(["not", "hashable"])  # type: ignore[arg-type]
    with pytest.raises(ConfigValueError, match="max_keys"):
        keyed(clock, max_keys=0)
    with pytest.raises(ConfigValueError, match="top"):
        lim.snapshot(top=-1)
    assert (lim.allowed, lim.rejected, lim.key_count) == (0, 0, 0)


def test_lru_cap_evicts_the_least_recently_used_key(clock: FakeClock) -> None:
    lim = keyed(clock, max_keys=3)
    for key in ("a", "b", "c"):
        lim.try_acquire(key)
    lim.try_acquire("a")  # "b" is now the least recently used
    lim.try_acquire("d")
    assert lim.key_count == 3
    assert lim.snapshot()["keys"] == 3
    assert lim.available_tokens("b") == 2  # forgotten: full again
    assert lim.available_tokens("a") == 0
    assert (lim.evictions, lim.evictions_not_full) == (1, 1)


def test_evicting_a_refilled_bucket_is_not_counted_as_a_loss(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=2, time_window=1.0, max_keys=2)
    lim.try_acquire("old", 2)
    clock.now += 1.0  # "old" has refilled to full
    lim.try_acquire("mid")
    lim.try_acquire("new")
    assert (lim.evictions, lim.evictions_not_full) == (1, 0)
    lim.try_acquire("newer")  # evicts "mid", which is not full yet
    assert (lim.evictions, lim.evictions_not_full) == (2, 1)
    assert lim.allowed == 4  # totals survive eviction


def test_memory_stays_bounded_under_many_distinct_keys(clock: FakeClock) -> None:
    lim = keyed(clock, max_keys=50)
    for i in range(5_000):
        clock.now += 0.001
        assert lim.try_acquire(f"user-{i}")
    assert lim.key_count == 50
    assert lim.evictions == 4_950


def test_acquire_per_key_waits_and_times_out(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=2, time_window=1.0)
    lim.acquire("alice", 2)
    lim.acquire("bob")  # another key does not wait
    assert clock.sleeps == []
    lim.acquire("alice")
    assert clock.sleeps == [pytest.approx(0.5)]
    with pytest.raises(RateLimitError) as info:
        lim.acquire("alice", 2, timeout=0.1)
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.name == "per-user"
    assert "'alice'" in str(info.value)
    assert (lim.allowed, lim.rejected) == (3, 1)


async def test_aacquire_per_key(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=1, time_window=2.0)
    await lim.aacquire("alice")
    await lim.aacquire("alice")
    assert clock.sleeps == [pytest.approx(2.0)]
    with pytest.raises(RateLimitError):
        await lim.aacquire("alice", timeout=0)


def test_snapshot_lists_the_busiest_keys(clock: FakeClock) -> None:
    lim = keyed(clock, max_requests=2, max_keys=10)
    for key, calls in (("quiet", 1), ("busy", 5), ("steady", 2), ("noisy", 4)):
        for _ in range(calls):
            lim.try_acquire(key)
    lim.try_acquire(("tuple", 1))
    snap = lim.snapshot(top=3)
    assert {k: snap[k] for k in ("name", "kind", "capacity", "rate", "available_tokens")} == {
        "name": "per-user",
        "kind": "keyed",
        "capacity": 2,
        "rate": 2.0,
        "available_tokens": None,
    }
    assert (snap["keys"], snap["max_keys"], snap["evictions"]) == (5, 10, 0)
    assert (snap["allowed"], snap["rejected"]) == (8, 5)
    assert snap["busiest_keys"] == [
        {"key": "busy", "allowed": 2, "rejected": 3, "available_tokens": 0.0},
        {"key": "noisy", "allowed": 2, "rejected": 2, "available_tokens": 0.0},
        {"key": "steady", "allowed": 2, "rejected": 0, "available_tokens": 0.0},
    ]
    assert lim.snapshot(top=0)["busiest_keys"] == []
    assert {"key": "('tuple', 1)", "allowed": 1, "rejected": 0, "available_tokens": 1.0} in (
        lim.snapshot()["busiest_keys"]
    )


def test_named_keyed_limiter_registers_itself(clock: FakeClock) -> None:
    lim = keyed(clock)
    assert lim  # empty but truthy: `registry.get(name) or ...` must not replace it
    assert rate_limiter_registry.get("per-user") is lim
    assert rate_limiter_registry.get_or_create("per-user", lim.config) is lim


def test_rejection_event_carries_the_key(clock: FakeClock) -> None:
    seen: list[Event] = []
    unsubscribe = bus.subscribe(seen.append)
    try:
        lim = keyed(clock, max_requests=1)
        lim.try_acquire(("tenant", 3))
        lim.try_acquire(("tenant", 3))
    finally:
        unsubscribe()
    assert len(seen) == 1
    event = seen[0]
    assert isinstance(event, RateLimitRejected)
    assert (event.name, event.key, event.tokens) == ("per-user", "('tenant', 3)", 1)
    assert event.retry_after == pytest.approx(1.0)


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    # Switch threads about every microsecond (default 5 ms), so that races would show.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("eager_thread_switching")
def test_eight_threads_never_exceed_the_bound_of_any_key() -> None:
    config = RateLimitConfig(max_requests=5_000, time_window=1.0, burst_size=500)
    started = time.monotonic()
    lim = KeyedRateLimiter(config, max_keys=4)
    keys = ["a", "b", "c", "d"]
    barrier = threading.Barrier(8)
    admitted = {key: [0] * 8 for key in keys}

    def hammer(slot: int) -> None:
        barrier.wait()
        deadline = time.monotonic() + 0.3
        i = slot
        while time.monotonic() < deadline:
            key = keys[i % 4]
            i += 1
            if lim.try_acquire(key):
                admitted[key][slot] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bound = config.capacity + (time.monotonic() - started) * config.rate
    for key in keys:
        assert config.capacity <= sum(admitted[key]) <= bound
    assert lim.allowed == sum(sum(counts) for counts in admitted.values())
    assert lim.rejected > 0 and lim.evictions == 0


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.sampled_from("abc"), st.integers(1, 7)), max_size=60
    )
)
def test_no_key_is_admitted_more_than_capacity_plus_elapsed_times_rate(
    steps: list[tuple[float, str, int]],
) -> None:
    config = RateLimitConfig(max_requests=5, time_window=3.0, burst_size=2)
    clock = FakeClock(now=98_765.4321)
    lim = KeyedRateLimiter(config, clock=clock)
    start = clock.now
    admitted = dict.fromkeys("abc", 0)
    for advance, key, tokens in steps:
        clock.now += advance
        if lim.try_acquire(key, tokens):
            admitted[key] += tokens
        bound = config.capacity + (clock.now - start) * config.rate
        assert admitted[key] <= bound + 1e-9 * bound
