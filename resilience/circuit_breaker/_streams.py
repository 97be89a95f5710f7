"""Breaker wrappers for generator and async generator functions (streamed calls).

A stream is one call that spans many steps. The breaker admits it at the first
``next``/``anext`` (creating the generator runs nothing, so it is not a call yet)
and records one outcome when it ends:

- exhausted: a success (or a slow call, if its slowest step took
  ``slow_call_duration`` or more);
- an exception escaping the stream: recorded like the error of a plain call
  (failure, success for a non-failure type, ignored for ignored types and
  BaseExceptions such as ``CancelledError``);
- abandoned (``close()``/``aclose()`` or garbage collection before exhaustion): a
  success. The stream had been producing items, so the dependency answered; the
  consumer stopping early says nothing against it.

``call_timeout`` bounds each step, not the whole stream: the time a consumer spends
between items is not the dependency's. An async step is cancelled at the deadline;
a sync step is checked when it returns. Either way the stream is closed, the
breaker counts a failure and :class:`~resilience.errors.CallTimeoutError` is raised.
Values sent with ``send``/``asend`` and exceptions thrown in with ``throw``/``athrow``
are passed on to the wrapped generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from resilience.circuit_breaker._breaker import CircuitBreaker

__all__ = ["guard_async_generator", "guard_generator"]


def guard_generator(
    breaker: CircuitBreaker, fn: Callable[..., Generator[Any, Any, Any]]
) -> Callable[..., Generator[Any, Any, Any]]:
    """A generator function running ``fn``'s generator as one breaker call."""

    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        gen = fn(*args, **kwargs)  # runs none of its body; bad arguments raise here
        generation = breaker._enter()
        if generation is None:  # DISABLED: run it, record nothing
            return (yield from gen)
        clock = breaker._clock
        limit = breaker._call_timeout
        slowest = 0.0
        timed_out = False  # _timed_out records the failure itself
        step: Callable[[Any], Any] = gen.send
        value: Any = None
        item: Any = None
        result: Any = None
        try:
            while True:
                start = clock()
                done = False
                try:
                    item = step(value)
                except StopIteration as stop:
                    result, done = stop.value, True
                elapsed = clock() - start
                if limit is not None and elapsed >= limit:  # the last step too
                    gen.close()
                    timed_out = True
                    raise breaker._timed_out(generation)
                slowest = max(slowest, elapsed)
                if done:
                    break
                try:
                    value = yield item
                    step = gen.send
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    step, value = gen.throw, exc
        except GeneratorExit:
            breaker._on_stream_end(generation, slowest)
            raise
        except BaseException as exc:
            if not timed_out:
                breaker._on_error(exc, generation, None)
            raise
        breaker._on_stream_end(generation, slowest)
        return result

    return wrapper


def guard_async_generator(
    breaker: CircuitBreaker, fn: Callable[..., AsyncGenerator[Any, Any]]
) -> Callable[..., AsyncGenerator[Any, Any]]:
    """An async generator function running ``fn``'s stream as one breaker call."""

    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        agen = fn(*args, **kwargs)  # as above: before admission, so no slot leaks
        generation = breaker._enter()
        clock = breaker._clock
        limit = None if generation is None else breaker._call_timeout
        slowest = 0.0
        timed_out = False
        step: Callable[[Any], Any] = agen.asend
        value: Any = None
        try:
            while True:
                start = clock()
                try:
                    if limit is None:
                        item = await step(value)
                    else:
                        scope = asyncio.timeout(limit)
                        try:
                            async with scope:
                                item = await step(value)
                        except TimeoutError as exc:
                            if not scope.expired():
                                raise
                            await agen.aclose()
                            timed_out = True
                            raise breaker._timed_out(generation or 0) from exc
                        except StopAsyncIteration:
                            if not scope.expired():
                                raise
                            timed_out = True  # ended late, swallowing the cancel
                            raise breaker._timed_out(generation or 0) from None
                        if scope.expired():  # the step swallowed the cancel
                            await agen.aclose()
                            timed_out = True
                            raise breaker._timed_out(generation or 0)
                except StopAsyncIteration:
                    slowest = max(slowest, clock() - start)
                    break
                slowest = max(slowest, clock() - start)
                try:
                    value = yield item
                    step = agen.asend
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    step, value = agen.athrow, exc
        except GeneratorExit:
            if generation is not None:
                breaker._on_stream_end(generation, slowest)
            raise
        except BaseException as exc:
            if generation is not None and not timed_out:
                breaker._on_error(exc, generation, None)
            raise
        if generation is not None:
            breaker._on_stream_end(generation, slowest)

    return wrapper
