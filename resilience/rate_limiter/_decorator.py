"""The ``rate_limit`` decorator (re-exported by :mod:`resilience.rate_limiter`)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar, cast

from resilience._kinds import CallableKind, callable_kind
from resilience._validate import positive_int
from resilience.errors import ConfigTypeError, RateLimitError
from resilience.rate_limiter._core import (
    AnyRateLimiter,
    RateLimitConfig,
    check_name,
    rate_limiter_registry,
    rejection,
)

__all__ = ["rate_limit"]


class _AsyncCheck(Protocol):
    """A limiter with ``blocking_io = True`` (its check is I/O) also has this."""

    async def atry_acquire(self, tokens: int = 1) -> bool: ...


class _AsyncKeyedCheck(Protocol):
    async def atry_acquire(self, key: Hashable, tokens: int = 1) -> bool: ...


F = TypeVar("F", bound=Callable[..., Any])


def rate_limit(
    config: RateLimitConfig,
    *,
    key: Callable[..., Hashable] | None = None,
    name: str | None = None,
    max_keys: int = 10_000,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[F], F]:
    """Refuse calls beyond ``config`` with :class:`RateLimitError`; sync or async.

    Without ``key`` every call spends from one :class:`RateLimiter`; with ``key``,
    ``key(*args, **kwargs)`` picks a bucket of a :class:`KeyedRateLimiter` (per user,
    per endpoint...) holding at most ``max_keys`` buckets. The limiter is registered
    under ``name`` (default ``module.qualname`` of the function) and exposed as
    ``wrapped.limiter``. Decorating two functions under one name raises
    ``ConfigValueError``: pass distinct names to functions made by a factory.

    Raises:
        ConfigTypeError: ``config`` is not a RateLimitConfig or ``key`` is not callable.
        ConfigValueError: bad ``max_keys``, or the name is already registered.
    """
    if not isinstance(config, RateLimitConfig):
        raise ConfigTypeError(f"config must be a RateLimitConfig, got {config!r}")
    if key is not None and not callable(key):
        raise ConfigTypeError(f"key must be a callable or None, got {key!r}")
    positive_int("max_keys", max_keys)
    check_name(name)

    def decorate(fn: F) -> F:
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        label = name or f"{fn.__module__}.{qualname}"
        # An object with `async def __call__` is async too (inspect alone misses it).
        is_async = callable_kind(fn) is CallableKind.ASYNC
        wrapper: Any
        # Four small wrappers rather than one calling a shared "gate": a Python call
        # per wrapped call is a third of the decorator's own cost.
        if key is None:
            single = rate_limiter_registry.factory(config, name=label, clock=clock)
            admit = single.try_acquire

            def refused() -> RateLimitError:
                return rejection(label, 1, single.retry_after())

            if is_async and getattr(single, "blocking_io", False):
                # A limiter whose check is a network round trip (Redis) must not hold
                # the event loop: check, and compute retry_after, in a thread.
                async_admit = cast(_AsyncCheck, single).atry_acquire

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    if not await async_admit():
                        raise await asyncio.to_thread(refused)
                    return await fn(*args, **kwargs)
            elif is_async:

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    if not admit():
                        raise refused()
                    return await fn(*args, **kwargs)
            else:

                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    if not admit():
                        raise refused()
                    return fn(*args, **kwargs)

            limiter: AnyRateLimiter = single
        else:
            pick = key
            keyed = rate_limiter_registry.keyed_factory(
                config, name=label, max_keys=max_keys, clock=clock
            )
            admit_key = keyed.try_acquire

            def refused_key(bucket: Hashable) -> RateLimitError:
                return rejection(label, 1, keyed.retry_after(bucket), bucket)

            if is_async and getattr(keyed, "blocking_io", False):
                async_admit_key = cast(_AsyncKeyedCheck, keyed).atry_acquire

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    bucket = pick(*args, **kwargs)
                    if not await async_admit_key(bucket):
                        raise await asyncio.to_thread(refused_key, bucket)
                    return await fn(*args, **kwargs)
            elif is_async:

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    bucket = pick(*args, **kwargs)
                    if not admit_key(bucket):
                        raise refused_key(bucket)
                    return await fn(*args, **kwargs)
            else:

                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    bucket = pick(*args, **kwargs)
                    if not admit_key(bucket):
                        raise refused_key(bucket)
                    return fn(*args, **kwargs)

            limiter = keyed
        wrapped: Any = functools.wraps(fn)(wrapper)
        # After wraps(), which copies fn.__dict__: a stacked inner limiter must not win.
        wrapped.limiter = limiter
        return cast(F, wrapped)

    return decorate
