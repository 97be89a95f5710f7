"""Edge cases found in review of issue 13's breaker streams and call_timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker_registry,
)
from resilience.circuit_breaker._streams import guard_async_generator
from resilience.errors import CallTimeoutError
from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig
from resilience.redis.limiter import encode_key
from tests.clock import FakeClock


@pytest.fixture(autouse=True)
def _forget_new_breakers() -> Iterator[None]:
    before = set(circuit_breaker_registry.names())
    yield
    for name in set(circuit_breaker_registry.names()) - before:
        circuit_breaker_registry.remove(name)


def make(name: str = "svc", **config: Any) -> CircuitBreaker:
    clock = FakeClock(100.0)
    return CircuitBreaker(name, CircuitBreakerConfig(**config), clock=clock, wall_clock=clock.wall)


async def _swallow_cancel() -> str:
    """A client that catches the cancellation at the deadline and returns anyway."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()  # never set: only the deadline ends it
    return "late"


def test_acall_that_swallows_the_timeout_cancel_still_counts_as_a_timeout() -> None:
    breaker = make(call_timeout=0.001)
    with pytest.raises(CallTimeoutError):
        asyncio.run(breaker.acall(_swallow_cancel))
    assert breaker.snapshot()["calls"]["failed"] == 1
    assert breaker.snapshot()["calls"]["successful"] == 0


def test_async_stream_step_that_swallows_the_timeout_cancel_counts_as_a_timeout() -> None:
    breaker = make(call_timeout=0.001)

    async def raw() -> AsyncIterator[str]:
        yield await _swallow_cancel()

    stream = guard_async_generator(breaker, raw)

    async def consume() -> list[str]:
        return [item async for item in stream()]

    with pytest.raises(CallTimeoutError):
        asyncio.run(consume())
    assert breaker.snapshot()["calls"]["failed"] == 1
    assert breaker.snapshot()["calls"]["successful"] == 0


def test_keyed_waiter_giving_up_after_its_key_was_evicted_does_not_refill_the_new_bucket() -> None:
    clock = FakeClock()
    lim: KeyedRateLimiter

    def interrupted_sleep(seconds: float) -> None:
        # While "a" waits in debt: "b" evicts it, "a" comes back with a fresh (full)
        # bucket and spends it all; then the waiter is interrupted.
        assert lim.try_acquire("b")
        assert lim.try_acquire("a", 4)
        raise KeyboardInterrupt

    lim = KeyedRateLimiter(
        RateLimitConfig(max_requests=4, time_window=1.0),
        max_keys=1,
        clock=clock,
        sleep=interrupted_sleep,
    )
    assert lim.try_acquire("a", 4)
    with pytest.raises(KeyboardInterrupt):
        lim.acquire("a", 4)
    # The tokens given back were owed to the evicted bucket, not this one.
    assert not lim.try_acquire("a")
    assert lim.available_tokens("a") == 0.0


def test_redis_key_encoding_of_a_frozenset_is_the_same_in_every_process() -> None:
    # Equal frozensets are one key in the in-memory limiter; their iteration order (and
    # so their repr) depends on the process's hash seed, so workers must not use it.
    code = (
        "from resilience.redis.limiter import encode_key;"
        "print(encode_key((frozenset({'alice', 'bob', 'carol'}), 1)))"
    )
    texts = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": os.getcwd()},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 5)
    }
    assert len(texts) == 1
    assert encode_key(frozenset({1, 2})) != encode_key(frozenset({"1", "2"}))
    assert encode_key(frozenset({1, 2})) != encode_key((1, 2))
