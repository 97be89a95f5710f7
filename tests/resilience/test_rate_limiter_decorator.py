from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Hashable, Iterator

import pytest

from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError
from resilience.rate_limiter import (
    KeyedRateLimiter,
    RateLimitConfig,
    RateLimiter,
    rate_limit,
    rate_limiter_registry,
)
from tests.clock import FakeClock

TWO_PER_SECOND = RateLimitConfig(max_requests=2, time_window=1.0)


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    rate_limiter_registry.clear()
    yield
    rate_limiter_registry.clear()


def test_sync_function_is_limited_and_keeps_its_metadata() -> None:
    clock = FakeClock()

    @rate_limit(TWO_PER_SECOND, clock=clock)
    def fetch(item: int, *, scale: int = 1) -> int:
        """Fetch an item."""
        return item * scale

    assert fetch(2, scale=3) == 6
    assert fetch(4) == 4
    with pytest.raises(RateLimitError) as info:
        fetch(5)
    assert info.value.retry_after == pytest.approx(0.5)
    assert info.value.name == f"{__name__}.{fetch.__qualname__}"
    clock.now += 0.5
    assert fetch(1) == 1

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch an item."
    assert fetch.__qualname__.endswith("<locals>.fetch")
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    limiter = fetch.limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, RateLimiter)
    assert (limiter.allowed, limiter.rejected) == (3, 1)
    assert rate_limiter_registry.get(f"{__name__}.{fetch.__qualname__}") is limiter


async def test_async_function_is_limited_and_stays_a_coroutine_function() -> None:
    @rate_limit(TWO_PER_SECOND, name="llm")
    async def ask(question: str) -> str:
        return question.upper()

    assert inspect.iscoroutinefunction(ask)
    assert await ask("a") == "A"
    assert await ask("b") == "B"
    with pytest.raises(RateLimitError) as info:
        await ask("c")
    assert info.value.name == "llm"
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert rate_limiter_registry.get("llm") is ask.limiter  # type: ignore[attr-defined]


def test_key_gives_each_caller_its_own_bucket() -> None:
    @rate_limit(TWO_PER_SECOND, key=lambda user, **_: user, name="per-user", max_keys=7)
    def handle(user: str, *, path: str = "/") -> str:
        return f"{user}:{path}"

    assert handle("alice") == "alice:/"
    assert handle("alice", path="/x") == "alice:/x"
    with pytest.raises(RateLimitError, match="for key 'alice'") as info:
        handle("alice")
    assert info.value.retry_after == pytest.approx(0.5, abs=0.01)
    assert handle("bob") == "bob:/"
    limiter = handle.limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, KeyedRateLimiter)
    assert limiter.max_keys == 7
    assert (limiter.allowed, limiter.rejected, limiter.key_count) == (3, 1, 2)
    assert rate_limiter_registry.get("per-user") is limiter


async def test_key_works_for_async_functions() -> None:
    @rate_limit(RateLimitConfig(max_requests=1, time_window=60), key=lambda *, tenant: tenant)
    async def run(*, tenant: str) -> str:
        return tenant

    assert await run(tenant="t1") == "t1"
    assert await run(tenant="t2") == "t2"
    with pytest.raises(RateLimitError):
        await run(tenant="t1")


def test_errors_from_the_function_pass_through_and_count_as_allowed() -> None:
    @rate_limit(TWO_PER_SECOND, name="boom")
    def boom() -> None:
        raise KeyError("inner")

    with pytest.raises(KeyError):
        boom()
    assert boom.limiter.allowed == 1  # type: ignore[attr-defined]


def test_stacked_decorators_each_expose_their_own_limiter() -> None:
    @rate_limit(TWO_PER_SECOND, name="outer")
    @rate_limit(RateLimitConfig(max_requests=5, time_window=1), name="inner")
    def work() -> None:
        return None

    work()
    assert work.limiter is rate_limiter_registry.get("outer")  # type: ignore[attr-defined]
    assert work.__wrapped__.limiter is rate_limiter_registry.get("inner")  # type: ignore[attr-defined]


def test_reusing_a_name_raises_at_decoration_time() -> None:
    rate_limit(TWO_PER_SECOND, name="dup")(lambda: None)
    with pytest.raises(ConfigValueError, match="'dup' is already registered"):
        rate_limit(TWO_PER_SECOND, name="dup")(lambda: None)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"config": "2/s"}, ConfigTypeError, "config"),
        ({"key": "user"}, ConfigTypeError, "key"),
        ({"max_keys": 0}, ConfigValueError, "max_keys"),
        ({"name": ""}, ConfigValueError, "name"),
    ],
)
def test_bad_arguments_raise_before_decorating(
    kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    arguments: dict[str, object] = {"config": TWO_PER_SECOND, **kwargs}
    with pytest.raises(error, match=field):
        rate_limit(**arguments)  # type: ignore[arg-type]
    assert len(rate_limiter_registry) == 0


def test_decorator_builds_its_limiters_with_the_registry_factories() -> None:
    class Single(RateLimiter):
        pass

    class Keyed(KeyedRateLimiter):
        pass

    rate_limiter_registry.factory = Single
    rate_limiter_registry.keyed_factory = Keyed
    try:

        @rate_limit(RateLimitConfig(max_requests=1, time_window=60), name="made.single")
        def one() -> None:
            return None

        @rate_limit(RateLimitConfig(max_requests=1, time_window=60), key=str, name="made.keyed")
        def per_key(who: str) -> None:
            return None

        assert type(one.limiter) is Single  # type: ignore[attr-defined]
        assert type(per_key.limiter) is Keyed  # type: ignore[attr-defined]
        assert rate_limiter_registry.get("made.single") is one.limiter  # type: ignore[attr-defined]
    finally:
        rate_limiter_registry.factory = None
        rate_limiter_registry.keyed_factory = None
    assert rate_limiter_registry.factory is RateLimiter


async def test_rate_limit_on_an_async_callable_object_limits_when_awaited() -> None:
    class Client:
        calls = 0

        async def __call__(self) -> str:
            Client.calls += 1
            return "ok"

    limited = rate_limit(
        RateLimitConfig(max_requests=1, time_window=60), name="async-callable-object"
    )(Client())
    assert await limited() == "ok"
    with pytest.raises(RateLimitError):
        await limited()
    assert Client.calls == 1


class _ThreadRecording:
    """Limiters whose check is I/O (``blocking_io``), like the Redis ones: record threads."""

    blocking_io = True
    threads: list[int]


class _IoSingle(RateLimiter, _ThreadRecording):
    threads: list[int] = []

    def try_acquire(self, tokens: int = 1) -> bool:
        _IoSingle.threads.append(threading.get_ident())
        return super().try_acquire(tokens)

    def retry_after(self, tokens: int = 1) -> float:
        _IoSingle.threads.append(threading.get_ident())
        return super().retry_after(tokens)

    async def atry_acquire(self, tokens: int = 1) -> bool:
        return await asyncio.to_thread(self.try_acquire, tokens)


class _IoKeyed(KeyedRateLimiter, _ThreadRecording):
    threads: list[int] = []

    def try_acquire(self, key: Hashable, tokens: int = 1) -> bool:
        _IoKeyed.threads.append(threading.get_ident())
        return super().try_acquire(key, tokens)

    def retry_after(self, key: Hashable, tokens: int = 1) -> float:
        _IoKeyed.threads.append(threading.get_ident())
        return super().retry_after(key, tokens)

    async def atry_acquire(self, key: Hashable, tokens: int = 1) -> bool:
        return await asyncio.to_thread(self.try_acquire, key, tokens)


async def test_a_limiter_doing_io_is_checked_off_the_event_loop() -> None:
    rate_limiter_registry.factory = _IoSingle
    rate_limiter_registry.keyed_factory = _IoKeyed
    _IoSingle.threads, _IoKeyed.threads = [], []
    try:
        one_a_day = RateLimitConfig(max_requests=1, time_window=86_400)

        @rate_limit(one_a_day, name="io.single")
        async def single() -> str:
            return "ok"

        @rate_limit(one_a_day, key=lambda who: who, name="io.keyed")
        async def keyed(who: str) -> str:
            return who

        assert await single() == "ok"
        with pytest.raises(RateLimitError) as refused:
            await single()
        assert refused.value.retry_after > 0
        assert await keyed("a") == "a"
        with pytest.raises(RateLimitError):
            await keyed("a")
    finally:
        rate_limiter_registry.factory = None
        rate_limiter_registry.keyed_factory = None
    loop_thread = threading.get_ident()
    # Checks and the refusal's retry_after both ran, and none of them on the loop's thread.
    assert len(_IoSingle.threads) == 3 and len(_IoKeyed.threads) == 3
    assert loop_thread not in _IoSingle.threads + _IoKeyed.threads
