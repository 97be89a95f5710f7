"""Streams through @circuit_breaker: generators, async generators, async callable objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from resilience.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import CallTimeoutError, CircuitOpenError
from tests.clock import FakeClock


@pytest.fixture(autouse=True)
def _forget_new_breakers() -> Iterator[None]:
    before = set(circuit_breaker_registry.names())
    yield
    for name in set(circuit_breaker_registry.names()) - before:
        circuit_breaker_registry.remove(name)


def install(name: str, clock: FakeClock, **config: Any) -> None:
    """Pre-create the named breaker with a fake clock; the decorator then reuses it."""
    from resilience.circuit_breaker import CircuitBreaker

    CircuitBreaker(name, CircuitBreakerConfig(**config), clock=clock, wall_clock=clock.wall)


def calls(name: str) -> dict[str, int]:
    breaker = circuit_breaker_registry.get(name)
    assert breaker is not None
    return dict(breaker.snapshot()["calls"])


# -- sync generators ---------------------------------------------------------------------


def test_failing_generator_streams_open_the_breaker() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=2), name="gen-fail")
    def stream() -> Iterator[int]:
        yield 1
        raise ConnectionError("dropped mid-stream")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            list(stream())
    assert stream.breaker.state is CircuitState.OPEN
    assert calls("gen-fail")["failed"] == 2
    with pytest.raises(CircuitOpenError):
        next(stream())


def test_generator_is_admitted_at_first_next_not_at_creation() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1), name="gen-admit")
    def stream() -> Iterator[int]:
        yield 1

    pending = stream()  # created while CLOSED, not yet a call
    stream.breaker.force_open()
    with pytest.raises(CircuitOpenError):
        next(pending)
    assert calls("gen-admit") == {
        "successful": 0,
        "failed": 0,
        "rejected": 1,
        "ignored": 0,
        "slow": 0,
    }


def test_exhausted_generator_is_one_success_and_keeps_its_return_value() -> None:
    @circuit_breaker(name="gen-ok")
    def stream() -> Iterator[int]:
        yield 1
        yield 2
        return 3  # noqa: B901 (the return value travels in StopIteration)

    gen = stream()
    assert next(gen) == 1
    assert calls("gen-ok")["successful"] == 0  # still running
    assert next(gen) == 2
    with pytest.raises(StopIteration) as done:
        next(gen)
    assert done.value.value == 3
    assert calls("gen-ok")["successful"] == 1


def test_abandoned_generator_counts_as_a_success_and_closes_the_inner_one() -> None:
    closed = []

    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1), name="gen-abandon")
    def stream() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    gen = stream()
    assert next(gen) == 1
    gen.close()
    assert closed == [True]
    assert calls("gen-abandon")["successful"] == 1
    assert stream.breaker.state is CircuitState.CLOSED


def test_send_and_throw_reach_the_wrapped_generator() -> None:
    @circuit_breaker(name="gen-send")
    def echo() -> Iterator[Any]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except KeyError:
            yield "caught"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    assert gen.throw(KeyError("k")) == "caught"


def test_generator_step_past_call_timeout_fails_the_stream() -> None:
    clock = FakeClock()
    install("gen-timeout", clock, failure_threshold=1, call_timeout=5)

    @circuit_breaker(name="gen-timeout")
    def stream() -> Iterator[int]:
        yield 1
        clock.advance(6)  # a step the dependency took 6 s over
        yield 2

    gen = stream()
    clock.advance(100)  # the consumer's own time between items does not count
    assert next(gen) == 1
    with pytest.raises(CallTimeoutError):
        next(gen)
    assert stream.breaker.state is CircuitState.OPEN
    assert calls("gen-timeout")["failed"] == 1


def test_disabled_breaker_runs_streams_unrecorded() -> None:
    @circuit_breaker(name="gen-disabled")
    def stream() -> Iterator[int]:
        yield 1
        raise ConnectionError

    stream.breaker.disable()
    with pytest.raises(ConnectionError):
        list(stream())
    assert calls("gen-disabled")["failed"] == 0


# -- async generators --------------------------------------------------------------------


async def test_failing_async_generator_streams_open_the_breaker() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=2), name="agen-fail")
    async def completion() -> AsyncIterator[str]:
        yield "Hel"
        raise ConnectionError("provider dropped the stream")

    for _ in range(5):
        with pytest.raises((ConnectionError, CircuitOpenError)):
            async for _chunk in completion():
                pass
    assert completion.breaker.state is CircuitState.OPEN
    counted = calls("agen-fail")
    assert (counted["failed"], counted["successful"], counted["rejected"]) == (2, 0, 3)


async def test_async_generator_success_and_abandonment_are_successes() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1), name="agen-ok")
    async def completion() -> AsyncIterator[str]:
        for chunk in ("a", "b", "c"):
            yield chunk

    assert [chunk async for chunk in completion()] == ["a", "b", "c"]
    stream = completion()
    assert await anext(stream) == "a"
    await stream.aclose()
    assert calls("agen-ok")["successful"] == 2
    assert completion.breaker.state is CircuitState.CLOSED


async def test_async_generator_hung_step_is_cancelled_at_call_timeout() -> None:
    cancelled = []

    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1, call_timeout=0.01), name="agen-hang")
    async def completion() -> AsyncIterator[str]:
        yield "first"
        try:
            await asyncio.Event().wait()  # the provider never sends the next chunk
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        yield "never"

    stream = completion()
    assert await anext(stream) == "first"
    with pytest.raises(CallTimeoutError) as info:
        await anext(stream)
    assert isinstance(info.value, TimeoutError)
    assert cancelled == [True]
    assert completion.breaker.state is CircuitState.OPEN


async def test_async_generator_cancelled_from_outside_is_ignored() -> None:
    @circuit_breaker(CircuitBreakerConfig(failure_threshold=1), name="agen-cancel")
    async def completion() -> AsyncIterator[str]:
        yield "first"
        await asyncio.Event().wait()
        yield "never"

    stream = completion()
    assert await anext(stream) == "first"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await anext(stream)
    assert completion.breaker.state is CircuitState.CLOSED
    assert calls("agen-cancel")["ignored"] == 1


# -- async callable objects ------------------------------------------------------------


class Client:
    def __init__(self) -> None:
        self.fail = True

    async def __call__(self, prompt: str) -> str:
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("503")
        return prompt.upper()


async def test_async_callable_object_is_guarded_while_awaited() -> None:
    client = Client()
    guarded = circuit_breaker(CircuitBreakerConfig(failure_threshold=2), name="obj")(client)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await guarded("hi")
    assert guarded.breaker.state is CircuitState.OPEN
    assert calls("obj")["failed"] == 2


async def test_async_callable_object_without_name_is_named_after_its_class() -> None:
    client = Client()
    client.fail = False
    guarded = circuit_breaker()(client)
    assert await guarded("hi") == "HI"
    assert guarded.breaker.name == f"{__name__}.Client"


def test_a_stream_called_with_bad_arguments_takes_no_trial_slot() -> None:
    clock = FakeClock()
    limits = {"failure_threshold": 1, "success_threshold": 1, "half_open_max_calls": 1}
    install("gen-args", clock, timeout=1, **limits)

    @circuit_breaker(name="gen-args")
    def stream(item: int) -> Iterator[int]:
        yield item

    with pytest.raises(ConnectionError):
        stream.breaker.call(_refused)
    clock.advance(1)
    with pytest.raises(TypeError):
        next(stream())  # type: ignore[call-arg]
    assert list(stream(7)) == [7]  # the only trial slot is still free
    assert stream.breaker.state is CircuitState.CLOSED


def _refused() -> None:
    raise ConnectionError("refused")
