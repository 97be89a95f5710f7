"""Name-keyed registries, so the API and dashboard can list primitives by name."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A thread-safe mapping of name to object. Objects are held strongly."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str) -> T | None:
        """The object registered under ``name``, or None."""
        return self._items.get(name)

    def all(self) -> list[T]:
        """Every registered object, sorted by name."""
        with self._lock:
            return [self._items[name] for name in sorted(self._items)]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        with self._lock:
            return sorted(self._items)

    def setdefault(self, name: str, factory: Callable[[], T]) -> T:
        """Return the object named ``name``, creating it with ``factory`` if absent."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self._kind} name must be a non-empty str, got {name!r}")
        with self._lock:
            item = self._items.get(name)
            if item is None:
                item = factory()
                self._items[name] = item
            return item

    def register(self, name: str, item: T) -> T:
        """Register ``item`` under ``name`` unless the name is taken; returns the holder."""
        return self.setdefault(name, lambda: item)

    def remove(self, name: str) -> T | None:
        """Forget ``name``; returns what was registered."""
        with self._lock:
            return self._items.pop(name, None)

    def clear(self) -> None:
        """Forget everything (tests use this)."""
        with self._lock:
            self._items.clear()
