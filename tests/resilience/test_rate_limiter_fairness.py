"""acquire() serves waiters in order: a large request cannot starve behind small ones."""

from __future__ import annotations

import asyncio

import pytest

from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, RateLimiter
from tests.clock import FakeClock


class Starved(Exception):
    """The waiter slept far more often than its one wait needs."""


def drained_limiter(clock: FakeClock) -> RateLimiter:
    lim = RateLimiter(
        RateLimitConfig(max_requests=10, time_window=1.0), clock=clock, sleep=clock.sleep
    )
    assert lim.try_acquire(10)
    return lim


def test_large_acquire_is_served_while_small_callers_keep_trying() -> None:
    clock = FakeClock()
    lim = drained_limiter(clock)
    small_admitted = []

    def busy_sleep(seconds: float) -> None:
        # While the large request waits, small callers try every 10 ms.
        if len(clock.sleeps) > 20:
            raise Starved
        clock.sleeps.append(seconds)
        end = clock.now + seconds
        while clock.now < end:
            clock.advance(min(0.01, end - clock.now))
            small_admitted.append(lim.try_acquire())

    lim._sleep = busy_sleep
    lim.acquire(8)
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] == pytest.approx(0.8)
    assert not any(small_admitted)  # the refill was the large request's
    assert lim.try_acquire() is False  # and it is spent
    clock.advance(0.15)
    assert lim.try_acquire() is True


def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    lim = drained_limiter(clock)
    # Three waiters reserve in turn (threads in real life); each is told its wait.
    first = lim._reserve(8, None)
    second = lim._reserve(1, None)
    third = lim._reserve(5, None)
    assert (first, second, third) == pytest.approx((0.8, 0.9, 1.4))
    assert lim.available_tokens() == 0.0  # a debt is shown as an empty bucket
    assert lim.retry_after() == pytest.approx(1.5)


def test_a_reservation_beyond_the_timeout_takes_nothing() -> None:
    clock = FakeClock()
    lim = drained_limiter(clock)
    with pytest.raises(Exception, match="rate limit"):
        lim.acquire(8, timeout=0.5)
    clock.advance(0.1)
    assert lim.try_acquire() is True
    assert (lim.allowed, lim.rejected) == (2, 1)


async def test_a_cancelled_waiter_gives_its_tokens_back() -> None:
    clock = FakeClock()
    lim = drained_limiter(clock)
    never = asyncio.Event()

    async def stuck_sleep(seconds: float) -> None:
        await never.wait()

    lim._async_sleep = stuck_sleep
    task = asyncio.create_task(lim.aacquire(8))
    await asyncio.sleep(0)
    assert lim.try_acquire() is False  # reserved by the waiter
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(0.1)
    assert lim.try_acquire() is True  # its 8 tokens went back: the debt is gone
    assert lim.allowed == 2


def test_keyed_large_acquire_is_served_while_small_callers_keep_trying() -> None:
    clock = FakeClock()
    lim = KeyedRateLimiter(
        RateLimitConfig(max_requests=10, time_window=1.0), clock=clock, sleep=clock.sleep
    )
    assert lim.try_acquire("user", 10)
    small_admitted = []

    def busy_sleep(seconds: float) -> None:
        if len(clock.sleeps) > 20:
            raise Starved
        clock.sleeps.append(seconds)
        end = clock.now + seconds
        while clock.now < end:
            clock.advance(min(0.01, end - clock.now))
            small_admitted.append(lim.try_acquire("user"))

    lim._sleep = busy_sleep
    lim.acquire("user", 8)
    assert len(clock.sleeps) == 1
    assert not any(small_admitted)
    assert lim.available_tokens("user") == 0.0
