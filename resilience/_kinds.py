"""What kind of callable a decorator wraps, so it picks the right wrapper once."""

from __future__ import annotations

import inspect
from enum import Enum

__all__ = ["CallableKind", "callable_kind"]


class CallableKind(Enum):
    """The four shapes a decorated callable can take."""

    SYNC = "sync"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async_generator"


def callable_kind(fn: object) -> CallableKind:
    """The kind of ``fn``: a function, or an object whose ``__call__`` is one.

    ``inspect`` already sees through ``functools.partial`` and bound methods; an
    object with ``async def __call__`` is only recognised through its ``__call__``
    (``inspect.iscoroutinefunction(obj)`` is False for it).
    """
    # Only the __call__ of an object tells its kind; callable() cannot.
    for candidate in (fn, getattr(fn, "__call__", None)):  # noqa: B004
        if inspect.iscoroutinefunction(candidate):
            return CallableKind.ASYNC
        if inspect.isasyncgenfunction(candidate):
            return CallableKind.ASYNC_GENERATOR
        if inspect.isgeneratorfunction(candidate):
            return CallableKind.GENERATOR
    return CallableKind.SYNC
