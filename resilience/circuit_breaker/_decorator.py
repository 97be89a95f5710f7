"""The ``circuit_breaker`` decorator (re-exported by :mod:`resilience.circuit_breaker`)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from resilience._kinds import CallableKind, callable_kind
from resilience.circuit_breaker._breaker import CircuitBreaker, circuit_breaker_registry
from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._core import CircuitState, open_error
from resilience.circuit_breaker._streams import guard_async_generator, guard_generator
from resilience.errors import ConfigTypeError
from resilience.events import CallRejected, bus

__all__ = ["BreakerWrapped", "circuit_breaker"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN


class BreakerWrapped(Protocol[P, R_co]):
    """A function wrapped by :func:`circuit_breaker`; its breaker is ``.breaker``."""

    breaker: CircuitBreaker
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    # Decorated methods bind like functions; their parameters are not checked then.
    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., R_co]: ...


def circuit_breaker(
    config: CircuitBreakerConfig | None = None, *, name: str | None = None
) -> Callable[[Callable[P, R]], BreakerWrapped[P, R]]:
    """Decorate a callable so every call goes through a breaker.

    Functions, coroutine functions and objects with an ``async def __call__`` are
    guarded call by call. Generator and async generator functions (streams, such as
    streamed LLM completions) are guarded as a whole: admitted at the first
    ``next``/``anext``, recorded when the stream is exhausted, raises, or is closed
    early (which counts as a success); ``call_timeout`` bounds each step. See
    :mod:`resilience.circuit_breaker._streams`.

    Without ``name`` the breaker is named ``module.qualname`` of the function; with a
    name, it is the registry's breaker of that name, shared by everything using it.
    Either way an existing breaker of that name is reused as it is (so a decorator
    run repeatedly, e.g. on a closure, does not pile up breakers).

    Args:
        config: rules for a breaker created here; ignored if the breaker exists.
        name: the registry name to use.

    Returns:
        A decorator; the wrapped function exposes its breaker as ``.breaker``.

    Raises:
        ConfigTypeError: ``config`` is not a CircuitBreakerConfig (for example
            ``@circuit_breaker`` used without parentheses).
    """
    if config is not None and not isinstance(config, CircuitBreakerConfig):
        raise ConfigTypeError(
            f"config must be a CircuitBreakerConfig or None, got {config!r} "
            "(write @circuit_breaker() with parentheses)"
        )

    def decorate(fn: Callable[P, R]) -> BreakerWrapped[P, R]:
        breaker = circuit_breaker_registry.get_or_create(
            name if name is not None else _default_name(fn), config
        )
        wrapper: Any
        kind = callable_kind(fn)
        if kind is CallableKind.ASYNC:
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await breaker.acall(async_fn, *args, **kwargs)

        elif kind is CallableKind.GENERATOR:
            wrapper = functools.wraps(fn)(guard_generator(breaker, cast(Any, fn)))
        elif kind is CallableKind.ASYNC_GENERATOR:
            wrapper = functools.wraps(fn)(
                guard_async_generator(breaker, cast(Callable[..., Any], fn))
            )
        else:
            wrapper = functools.wraps(fn)(_sync_wrapper(breaker, fn))
        wrapper.breaker = breaker
        return cast(BreakerWrapped[P, R], wrapper)

    return decorate


def _sync_wrapper(breaker: CircuitBreaker, fn: Callable[P, R]) -> Callable[P, R]:
    # The two hot paths of CircuitBreaker.call, inlined: delegating would add a frame
    # and an argument repack, about doubling the cost of a CLOSED call. Anything
    # else (half-open, rules on, operator states) goes through breaker.call.
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        generation = breaker._generation
        state = breaker._state
        if state is _CLOSED and breaker._plain:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                breaker._on_error(exc, generation, None)
                raise
            breaker._successful.add()
            if breaker._failure_count:
                breaker._record(generation, None)
            return result
        if state is _OPEN:
            remaining = breaker._open_until - breaker._clock()
            if remaining > 0:
                breaker._rejected.add()
                if breaker._listeners or CallRejected in bus._wanted:
                    breaker._announce_rejection(remaining)
                raise open_error(breaker._name, remaining, breaker._open_message)
        return breaker.call(fn, *args, **kwargs)

    return wrapper


def _default_name(fn: Callable[..., Any]) -> str:
    # A callable object has no __qualname__ of its own: name it after its class.
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{fn.__module__}.{qualname}"
