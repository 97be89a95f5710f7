"""Typed events and the bus that carries them to listeners.

Primitives publish small frozen events (a breaker changed state, a call was
rejected, a checkpoint was saved). Listeners run on the publishing thread, so they
must be cheap: anything slow (database writes, network sends) belongs behind a
:class:`resilience.dispatch.BatchDispatcher`, whose ``submit`` only appends to a
bounded queue. With no listener subscribed, publishing costs one truthiness test.
A listener that raises is logged and counted; the error never reaches the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BreakerStateChanged",
    "CallRejected",
    "CheckpointCorrupted",
    "CheckpointSaved",
    "Event",
    "EventBus",
    "Listener",
    "RateLimitRejected",
    "bus",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. ``time`` is wall-clock seconds since the epoch."""

    name: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStateChanged(Event):
    """A circuit breaker moved from one state to another.

    ``from_state`` / ``to_state`` are :class:`resilience.CircuitState` values (strings);
    ``actor`` and ``note`` are set for manual actions (reset, force open, disable).
    ``observed`` is True when this process did not make the transition but only
    followed it (a breaker shared through Redis learning of another process's
    transition, or its local view catching up with Redis): record such an event
    nowhere durable, the process where it happened publishes it with ``observed``
    False. It is always False for in-memory breakers.
    """

    from_state: str
    to_state: str
    reason: str
    failure_count: int = 0
    failure_rate: float | None = None
    actor: str | None = None
    note: str | None = None
    observed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A breaker refused a call without running it."""

    state: str
    remaining: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitRejected(Event):
    """A rate limiter refused ``tokens`` tokens (``key`` for per-key limiters)."""

    tokens: int
    retry_after: float
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointSaved(Event):
    """A checkpoint was written. ``name`` is the checkpoint id."""

    agent_id: str
    workflow_id: str
    raw_size: int
    stored_size: int
    codec: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointCorrupted(Event):
    """A checkpoint failed verification on load or verify. ``name`` is its id."""

    reason: str


Listener = Callable[[Event], object]


class EventBus:
    """A list of listeners, copied on write so that publishing takes no lock."""

    __slots__ = ("_listeners", "_lock", "listener_errors")

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self.listener_errors = 0

    @property
    def active(self) -> bool:
        """True when at least one listener is subscribed."""
        return bool(self._listeners)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add ``listener``; returns a function that removes it again."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self.unsubscribe(listener)

        return unsubscribe

    def unsubscribe(self, listener: Listener) -> None:
        """Remove ``listener`` if it is subscribed (no error otherwise)."""
        with self._lock:
            listeners = list(self._listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._listeners = tuple(listeners)

    def publish(self, event: Event) -> None:
        """Call every listener with ``event``; never raises."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                logger.exception("event listener %r failed on %r", listener, event)


bus = EventBus()
"""The process-wide bus: every breaker, limiter and checkpoint manager publishes here."""
