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
    """Listeners, copied on write so that publishing takes no lock.

    A listener may subscribe to some event types only (``types=``): events of other
    types are not delivered to it, and a publisher can skip *building* an event nobody
    wants (``CallRejected in bus._wanted``, one set lookup: a rejected call then costs no
    event while only, say, the fleet's transition listener is subscribed).
    """

    __slots__ = ("_listeners", "_lock", "_routes", "_subscriptions", "_wanted", "listener_errors")

    def __init__(self) -> None:
        self._subscriptions: tuple[tuple[Listener, tuple[type[Event], ...] | None], ...] = ()
        self._listeners: tuple[Listener, ...] = ()
        self._routes: dict[type[Event], tuple[Listener, ...]] = {}
        self._wanted: frozenset[type[Event]] = frozenset()
        self._lock = threading.Lock()
        self.listener_errors = 0

    @property
    def active(self) -> bool:
        """True when at least one listener is subscribed."""
        return bool(self._listeners)

    def wants(self, kind: type[Event]) -> bool:
        """True when a listener would receive events of type ``kind``."""
        return kind in self._wanted or (
            kind not in self._routes
            and any(t is None or issubclass(kind, t) for _, t in self._subscriptions)
        )

    def subscribe(
        self, listener: Listener, *, types: tuple[type[Event], ...] | None = None
    ) -> Callable[[], None]:
        """Add ``listener`` (for events of ``types`` only, if given); returns a function
        that removes it again.

        Raises:
            TypeError: ``listener`` is not callable, or ``types`` is not a non-empty
                tuple of Event subclasses.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        if types is not None and not (
            isinstance(types, tuple)
            and types
            and all(isinstance(t, type) and issubclass(t, Event) for t in types)
        ):
            raise TypeError(f"types must be a non-empty tuple of Event subclasses, got {types!r}")
        with self._lock:
            self._subscriptions = (*self._subscriptions, (listener, types))
            self._rebuild()

        def unsubscribe() -> None:
            self.unsubscribe(listener)

        return unsubscribe

    def unsubscribe(self, listener: Listener) -> None:
        """Remove ``listener`` if it is subscribed (no error otherwise)."""
        with self._lock:
            subscriptions = list(self._subscriptions)
            for index, (subscribed, _types) in enumerate(subscriptions):
                if subscribed == listener:
                    del subscriptions[index]
                    break
            self._subscriptions = tuple(subscriptions)
            self._rebuild()

    def _rebuild(self) -> None:
        # Under the lock: who gets each known event type, computed once per change.
        subscriptions = self._subscriptions
        routes = {
            kind: tuple(
                listener
                for listener, types in subscriptions
                if types is None or issubclass(kind, types)
            )
            for kind in _event_types()
        }
        self._routes = routes
        self._wanted = frozenset(kind for kind, listeners in routes.items() if listeners)
        self._listeners = tuple(listener for listener, _types in subscriptions)

    def publish(self, event: Event) -> None:
        """Call every listener that wants ``event``; never raises."""
        listeners = self._routes.get(type(event))
        if listeners is None:  # a type defined after the last (un)subscribe
            listeners = tuple(
                listener
                for listener, types in self._subscriptions
                if types is None or isinstance(event, types)
            )
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                logger.exception("event listener %r failed on %r", listener, event)


def _event_types() -> list[type[Event]]:
    found: list[type[Event]] = []
    pending: list[type[Event]] = [Event]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


bus = EventBus()
"""The process-wide bus: every breaker, limiter and checkpoint manager publishes here."""
