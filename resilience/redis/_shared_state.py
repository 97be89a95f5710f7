"""The shared-state half of :class:`~resilience.redis.breaker.RedisCircuitBreaker`:
running the script and keeping the local state machine in step with Redis.

Events. The process where a transition happened publishes it with its reason;
the others publish it when they observe it, with ``"(observed via Redis from
host:pid)"`` appended to the reason and ``observed=True`` (so that a recorder
writes each transition once, and a process still refreshes its own view). The
lazy OPEN -> HALF_OPEN step of a state read is made in Redis (op ``due``), so it
too happens once, in the first process that looks.

Redis down. The breaker falls back to its local state machine (as the in-memory
breaker does), nothing raises, a warning is logged at most once a minute, and an
operator action is replayed to Redis when it returns. When Redis returns (the
client reconnects, the thread re-subscribes, the scripts reload on NOSCRIPT) every
process adopts Redis's state, so they converge.

Concurrency model: a reply (``View``) is applied under the breaker's lock
(:meth:`SharedStateBreaker._apply`), by the calling thread or the hub's pub/sub thread;
``(epoch, version)`` orders replies, so an older one overtaken by a newer one is
dropped; events the transition queued are drained after the lock is released.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections import deque
from dataclasses import replace
from typing import Any

from redis.commands.core import Script

from resilience.circuit_breaker import CircuitBreaker
from resilience.circuit_breaker._core import CircuitState, _iso
from resilience.events import BreakerStateChanged
from resilience.redis._client import UNAVAILABLE, Backend
from resilience.redis._hub import Hub

logger = logging.getLogger("resilience.redis")

_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_HOST = socket.gethostname()
_CHANGED = BreakerStateChanged

View = dict[str, Any]
Period = tuple[str, int]
"""``(epoch, version)`` of the Redis state a call was admitted in."""
# An operator action taken while Redis was down: target, reason, actor, note, and the
# (epoch, operator count) this process last saw, so a newer action is not overridden.
_Queued = tuple[CircuitState, str, str | None, str | None, str, int]


def process_id() -> str:
    """``host:pid`` of this process, as origins and reasons name it."""
    return f"{_HOST}:{os.getpid()}"


class SharedStateBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` whose state follows one Redis hash; the attributes are
    set by :class:`~resilience.redis.breaker.RedisCircuitBreaker`'s constructor."""

    __slots__ = (
        "_backend",
        "_channel",
        "_hub",
        "_key",
        "_queued_operator",
        "_remote_epoch",
        "_remote_oc",
        "_remote_version",
        "_script",
        "_static",
        "_synced",
        "_token",
    )

    _backend: Backend
    _channel: str
    _hub: Hub
    _key: str
    _queued_operator: _Queued | None
    _remote_epoch: str
    _remote_oc: int
    _remote_version: int
    _script: Script
    _static: tuple[str, str, str, str, str]
    _synced: threading.Event
    _token: str

    # -- talking to Redis ------------------------------------------------------------

    def _remote(
        self,
        op: str,
        *,
        reason: str = "",
        target: str = "",
        actor: str | None = None,
        note: str | None = None,
        force: bool = False,
        period: Period | None = None,
        operators: int = 0,
    ) -> View | None:
        """Run one op of the script; its state view, or None when Redis is unavailable.

        ``period`` is the Redis state an outcome belongs to (default: the latest seen);
        the script ignores an outcome whose period has ended.
        """
        epoch, version = (self._remote_epoch, self._remote_version) if period is None else period
        args = (
            op,
            epoch,
            str(version),
            f"{process_id()}/{self._token}",
            *self._static,
            reason,
            target,
            actor or "",
            note or "",
            self._channel,
            str(operators),
        )
        reply = self._backend.run(self._script, (self._key,), args, force=force)
        if reply is UNAVAILABLE:
            return None
        view: View = json.loads(reply)
        return view

    def resync(self) -> None:
        """Adopt the state held in Redis (after (re)subscribing and periodically).

        An operator action taken while Redis was down is sent first. Never raises.
        """
        queued = self._queued_operator
        if queued is not None:
            self._queued_operator = None
            to, reason, actor, note, epoch, operators = queued
            # Replayed only if no other operator acted in Redis since this process last
            # looked; otherwise the newer action stands and this one is dropped.
            view = self._remote(
                "replay",
                reason=reason,
                target=to.value,
                actor=actor,
                note=note,
                force=True,
                period=(epoch, self._remote_version),
                operators=operators,
            )
            if view is not None and not view["moved"]:
                logger.warning(
                    "circuit breaker %r: operator action %r taken while Redis was down "
                    "not replayed: a newer operator action was made meanwhile",
                    self._name,
                    reason,
                )
        else:
            view = self._remote("state", force=True)
        if view is None:
            if queued is not None:
                self._queued_operator = queued
            return
        with self._lock:
            self._apply(view)
        self._synced.set()
        if self._pending:
            self._drain()

    @property
    def needs_resync(self) -> bool:
        """True when Redis failed and its back-off is over (the hub then resyncs)."""
        backend = self._backend
        return backend.down and backend.available

    def forked(self) -> None:
        """In a forked child: not synced until the child's own thread has resynced."""
        self._synced = threading.Event()

    def observe(self, payload: bytes | str) -> None:
        """Apply a transition published on the channel (called by the pub/sub thread)."""
        view: View = json.loads(payload)
        with self._lock:
            self._apply(view, fresh=False)
        if self._pending:
            self._drain()

    def _apply(self, view: View, *, fresh: bool = True) -> None:
        """Make the local state match ``view``; the lock is held.

        ``fresh`` is False for a published view: its ``rem`` was measured when it was
        published, so it restarts the OPEN countdown only for a period not seen yet.
        """
        epoch, version = view["ep"], view["v"]
        generation = self._generation
        # A process's first look at Redis reports a differing state, but not an old
        # operator action as if it had just happened.
        first = self._remote_epoch == ""
        same_epoch = epoch == self._remote_epoch
        if same_epoch and version < self._remote_version:
            return  # an older reply overtaken by a newer one
        newer = not same_epoch or version > self._remote_version
        self._remote_epoch, self._remote_version = epoch, version
        self._remote_oc = view.get("oc", 0)
        to = CircuitState(view["s"])
        if to is not self._state or (newer and view["op"] and not first):
            reason = view["r"]
            # "host:pid/token": the token tells this breaker object from another one of
            # the same name in the same process (tests, or a breaker re-created).
            origin = view["o"]
            process = origin.partition("/")[0]
            observed = not newer or origin != f"{process_id()}/{self._token}"
            if not newer:
                reason = f"resynced with Redis: {reason}"
            elif process != process_id():
                reason = f"{reason} (observed via Redis from {process})"
            self._failure_count = view["tf"] if newer else self._failure_count
            actor, note = view["a"] or None, view["n"] or None
            if observed:
                self._observed_transition(to, reason, actor, note)
            else:
                self._transition(to, reason, actor=actor, note=note)
            if to is _OPEN or to is _FORCED_OPEN:
                opened = view["oa"]
                if opened:
                    self._opened_at = int(opened) / 1000
                if to is _OPEN:
                    until = (self._opened_at or self._wall_clock()) + self._timeout
                    self._open_message = (
                        f"circuit breaker {self._name!r} is open until {_iso(until)}"
                    )
        if to is _OPEN and (fresh or newer):
            # Redis's clock decides when trials start; this process counts it down. A late
            # echo of a period already applied (from a script's reply) must not restart it.
            self._open_until = self._clock() + view["rem"] / 1000
        if newer and self._generation == generation:
            # Redis moved on (e.g. HALF_OPEN -> OPEN -> HALF_OPEN, learned only from a
            # resync) though the state's name is the same: calls admitted before are
            # from an ended period, and their outcomes must not count in this one.
            self._generation += 1
        self._failure_count = view["f"]
        self._success_count = view["sc"]
        if self._state is _HALF_OPEN:
            self._in_flight = view["fl"]

    def _observed_transition(
        self, to: CircuitState, reason: str, actor: str | None, note: str | None
    ) -> None:
        """``_transition`` whose event says ``observed=True``; the lock is held."""
        # Marked before it joins the queue, which other threads drain without the lock.
        real, self._pending = self._pending, deque()
        try:
            self._transition(to, reason, actor=actor, note=note)
        finally:
            made, self._pending = self._pending, real
        for event in made:
            real.append(replace(event, observed=True) if type(event) is _CHANGED else event)

    def _refresh(self) -> None:
        """The lazy OPEN -> HALF_OPEN step of state reads, made in Redis when it is up."""
        if self._state is not _OPEN or self._clock() < self._open_until:
            return
        view = self._remote("due") if self._backend.available else None
        if view is None:
            super()._refresh()
            return
        with self._lock:
            self._apply(view)
        if self._pending:
            self._drain()

    def _period(self, generation: int) -> Period | None:
        """The Redis period of a call admitted at ``generation``; None if it has ended."""
        with self._lock:
            if generation != self._generation:
                return None
            return self._remote_epoch, self._remote_version

    def _operator(self, to: CircuitState, reason: str, actor: str | None, note: str | None) -> None:
        view = self._remote("set", reason=reason, target=to.value, actor=actor, note=note)
        if view is None:
            # Redis is down: act locally now, and tell Redis when it is back.
            with self._lock:
                known = (self._remote_epoch, self._remote_oc)
            self._queued_operator = (to, reason, actor, note, *known)
            super()._operator(to, reason, actor, note)
            return
        self._queued_operator = None
        with self._lock:
            self._apply(view)
        self._drain()
