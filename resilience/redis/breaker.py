"""A circuit breaker whose state is shared by every process through Redis.

:class:`RedisCircuitBreaker` is a :class:`~resilience.circuit_breaker.CircuitBreaker`
(same calls, decorator, registry, snapshot and events) whose state machine lives in
one Redis hash, changed only by the atomic script
:data:`resilience.redis.scripts.BREAKER`, which publishes every transition on the
breaker's channel.

Cost model. A healthy CLOSED breaker runs the inherited lock-free fast path: no
Redis round trip. Failures go to Redis one by one (they are rare, and the count of
consecutive failures is shared); successes go only while this process knows of a
failure count to reset. OPEN rejections are local (the remaining time came with
the transition). HALF_OPEN trial permits and outcomes, and operator actions, are
one round trip each. Transitions reach the other processes through pub/sub (a
background thread per client) within milliseconds.

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

The failure-rate rule (``sliding_window_size``) is evaluated per process over that
process's calls; when it trips, the breaker opens everywhere.

Consecutive failures across processes. The first failure of a run (count 0 -> 1) and
the reset of the count are published (without a transition), so every process knows
when a count is pending, and its next success resets the shared count, as a success
does in memory. A success made before its process has heard of the failure (the
pub/sub latency, about a millisecond) does not reset it.

Async calls (:meth:`acall`, and so ``@circuit_breaker`` on ``async def``). The event
loop never waits for Redis: a half-open trial permit is taken in a worker thread
(``asyncio.to_thread``) before the call, and outcomes that must reach Redis (failures,
resets, trial outcomes, permit releases) are queued during the call and sent from a
worker thread after it, before ``acall`` returns. A healthy CLOSED call makes no
thread hop. Concurrency: a ``_AsyncCall`` in a context variable carries the permit
taken in the thread and the queued outcomes of one ``acall`` of one breaker.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, ParamSpec, TypeVar

import redis

from resilience.circuit_breaker import CircuitBreaker
from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._core import CircuitState, _iso
from resilience.errors import ConfigTypeError
from resilience.events import BreakerStateChanged
from resilience.redis._client import UNAVAILABLE, Backend, check_client, check_tag
from resilience.redis._hub import Hub, hub_for
from resilience.redis.scripts import BREAKER

__all__ = ["RedisCircuitBreaker"]

logger = logging.getLogger("resilience.redis")

DEFAULT_PREFIX = "resilience:cb:"

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_HOST = socket.gethostname()
_CHANGED = BreakerStateChanged
P = ParamSpec("P")
R = TypeVar("R")


class _AsyncCall:
    """One ``acall`` of one breaker: its pre-taken permit and its queued outcomes."""

    __slots__ = ("admitted", "jobs", "owner")

    def __init__(self, owner: RedisCircuitBreaker, admitted: int | None) -> None:
        self.owner = owner
        self.admitted = admitted
        self.jobs: list[Callable[[], object]] = []


def _run_all(jobs: list[Callable[[], object]]) -> None:
    for job in jobs:
        job()


_async_call: contextvars.ContextVar[_AsyncCall | None] = contextvars.ContextVar(
    "resilience_redis_async_call", default=None
)

View = dict[str, Any]
Period = tuple[str, int]
"""``(epoch, version)`` of the Redis state a call was admitted in."""
# An operator action taken while Redis was down: target, reason, actor, note, and the
# (epoch, operator count) this process last saw, so a newer action is not overridden.
_Queued = tuple[CircuitState, str, str | None, str | None, str, int]


class RedisCircuitBreaker(CircuitBreaker):
    """A :class:`~resilience.circuit_breaker.CircuitBreaker` shared through Redis.

    Every process creating a breaker with the same ``name`` (and ``key_prefix``) on
    the same Redis sees one breaker: state, consecutive failures, ``opened_at``,
    half-open permits and successes. ``calls`` totals in the snapshot are this
    process's. Creating it does not connect: a background thread subscribes and
    reads the shared state (see :meth:`wait_synced`).

    Args:
        name: unique, non-empty, without braces (it becomes the Redis hash tag).
        config: the rules; every process should use the same.
        redis: a ``redis.Redis`` client; default :func:`resilience.redis.default_client`.
        key_prefix: prefix of the Redis key and channel.
        retry_interval: seconds without trying Redis after it failed.
        trial_lease: seconds after which half-open permits taken by a process that
            never reported back (it died) are handed out again; default
            ``max(timeout, 30)``.
        clock, wall_clock: as for ``CircuitBreaker``.

    Raises:
        ConfigTypeError, ConfigValueError: bad arguments.
        ValueError: a breaker named ``name`` is already registered.
    """

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

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        redis: redis.Redis | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        retry_interval: float = 1.0,
        trial_lease: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_tag("name", name)
        client = check_client(redis, what=f"circuit breaker {name!r}")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise ConfigTypeError(f"config must be a CircuitBreakerConfig, got {config!r}")
        backend = Backend(
            client,
            what=f"circuit breaker {name!r}",
            retry_interval=retry_interval,
            clock=clock,
        )
        lease = max(config.timeout_seconds, 30.0) if trial_lease is None else trial_lease
        # Every attribute exists before ``super().__init__`` publishes the breaker in
        # the registry: a concurrent get_or_create or /metrics scrape may use it at once.
        self._static = (
            str(config.failure_threshold),
            str(config.success_threshold),
            str(round(config.timeout_seconds * 1000)),
            str(config.half_open_max_calls),
            str(round(lease * 1000)),
        )
        self._backend = backend
        self._script = backend.register(BREAKER)
        self._key = f"{key_prefix}{{{name}}}"
        self._channel = f"{self._key}:events"
        self._remote_epoch = ""
        self._remote_version = -1
        self._remote_oc = 0
        self._queued_operator: _Queued | None = None
        self._synced = threading.Event()
        self._token = uuid.uuid4().hex[:8]
        self._hub: Hub = hub_for(client)
        super().__init__(name, config, clock=clock, wall_clock=wall_clock)
        backend.on_recover = self.resync
        self._hub.add(self)

    def __repr__(self) -> str:
        return f"<RedisCircuitBreaker {self._name!r} {self._state.value} key={self._key!r}>"

    @property
    def channel(self) -> str:
        """The pub/sub channel carrying this breaker's transitions."""
        return self._channel

    @property
    def redis_key(self) -> str:
        """The Redis hash holding the shared state."""
        return self._key

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the shared state has been read once; False on timeout."""
        return self._synced.wait(timeout)

    def close(self) -> None:
        """Stop following Redis (the breaker keeps working on its local state)."""
        self._hub.remove(self)

    def snapshot(self) -> dict[str, Any]:
        """``CircuitBreaker.snapshot()`` plus ``backend*`` health fields, ``shared``
        (True), ``redis_key`` and ``subscribed`` (the pub/sub thread is connected)."""
        view = super().snapshot()
        view.update(self._backend.describe())
        view.update(shared=True, redis_key=self._key, subscribed=self._hub.connected.is_set())
        return view

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
            f"{_HOST}:{os.getpid()}/{self._token}",
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
            self._apply(view)
        if self._pending:
            self._drain()

    def _apply(self, view: View) -> None:
        """Make the local state match ``view``; the lock is held."""
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
            observed = not newer or origin != f"{_HOST}:{os.getpid()}/{self._token}"
            if not newer:
                reason = f"resynced with Redis: {reason}"
            elif process != f"{_HOST}:{os.getpid()}":
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
        if to is _OPEN:
            # Redis's clock decides when trials start; this process counts it down.
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

    # -- hooks into the state machine ------------------------------------------------

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

    # -- async calls: Redis round trips off the event loop ------------------------------

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``CircuitBreaker.acall`` whose Redis round trips run in worker threads.

        See the module docstring: the trial permit is taken before the call, the
        outcome is sent after it; both are awaited, so when this returns the outcome
        is in Redis, as with :meth:`call`.
        """
        admitted = None
        if self._trial_needs_redis():
            admitted = await asyncio.to_thread(self._admit)  # raises CircuitOpenError
        call = _AsyncCall(self, admitted)
        token = _async_call.set(call)
        try:
            return await super().acall(fn, *args, **kwargs)
        finally:
            _async_call.reset(token)
            if call.jobs:
                # One thread hop for every queued job, finished even if we are cancelled.
                await asyncio.to_thread(_run_all, call.jobs)

    def _trial_needs_redis(self) -> bool:
        state = self._state
        return (
            state is _HALF_OPEN or (state is _OPEN and self._open_until <= self._clock())
        ) and self._backend.available

    def _deferred(self) -> _AsyncCall | None:
        """The running ``acall`` of this breaker in this context, if any."""
        call = _async_call.get()
        return call if call is not None and call.owner is self else None

    def _admit(self) -> int:
        call = self._deferred()
        if call is not None and call.admitted is not None:
            generation, call.admitted = call.admitted, None
            return generation
        state = self._state
        if (
            state is _CLOSED
            or state is _FORCED_OPEN
            or state is _DISABLED
            or (state is _OPEN and self._open_until > self._clock())
            or not self._backend.available
        ):
            return super()._admit()
        view = self._remote("trial")
        if view is None:
            return super()._admit()
        with self._lock:
            self._apply(view)
            generation = self._generation
            state = self._state
            # A reply overtaken by a newer state: its permit belongs to a period that
            # has ended, so the call is refused.
            current = (view["ep"], view["v"]) == (self._remote_epoch, self._remote_version)
        if self._pending:
            self._drain()
        if view["g"] and current:
            return generation
        if state is _FORCED_OPEN:
            raise self._rejection(None)
        raise self._rejection(view["rem"] / 1000 if state is _OPEN else 0.0)

    def _record(self, generation: int, failure: dict[str, Any] | None) -> None:
        call = self._deferred()
        if call is not None and self._would_send(generation, failure):
            call.jobs.append(partial(self._record_now, generation, failure))
            return
        self._record_now(generation, failure)

    def _would_send(self, generation: int, failure: dict[str, Any] | None) -> bool:
        """Whether recording this outcome now would make a Redis round trip."""
        state = self._state
        return (
            generation == self._generation
            and (
                state is _HALF_OPEN
                or (state is _CLOSED and (failure is not None or self._failure_count > 0))
            )
            and self._backend.available
        )

    def _record_now(self, generation: int, failure: dict[str, Any] | None) -> None:
        state = self._state
        if (
            generation != self._generation
            or (state is not _CLOSED and state is not _HALF_OPEN)
            or not self._backend.available
        ):
            super()._record(generation, failure)
            return
        period = self._period(generation)
        if period is None:
            super()._record(generation, failure)
            return
        if state is _HALF_OPEN:
            if failure is None:
                view = self._remote("trial_ok", period=period)
            else:
                view = self._remote(
                    "trial_fail", reason=f"trial call failed ({failure['type']})", period=period
                )
            if view is None:
                super()._record(generation, failure)
                return
            with self._lock:
                if failure is not None:
                    self._last_failure = failure
                self._apply(view)
        else:
            self._record_closed_shared(generation, failure, period)
        if self._pending:
            self._drain()

    def _period(self, generation: int) -> Period | None:
        """The Redis period of a call admitted at ``generation``; None if it has ended."""
        with self._lock:
            if generation != self._generation:
                return None
            return self._remote_epoch, self._remote_version

    def _record_closed_shared(
        self, generation: int, failure: dict[str, Any] | None, period: Period
    ) -> None:
        failed = failure is not None
        view = None
        if failed or self._failure_count:
            view = self._remote("fail" if failed else "ok", period=period)
            if view is None:
                super()._record(generation, failure)
                return
        trip = None
        with self._lock:
            if failure is not None:
                self._last_failure = failure
            if view is not None:
                self._apply(view)
            window = self._window
            if window is not None and generation == self._generation and self._state is _CLOSED:
                window.record(failed)
                rate = window.rate(self._minimum_calls)
                if rate is not None and rate >= self._rate_threshold:
                    trip = (
                        f"failure_rate_threshold reached ({rate:.1f}% of the last "
                        f"{len(window)} calls in {_HOST}:{os.getpid()} failed)"
                    )
        if trip is not None:
            view = self._remote("trip", reason=trip, period=period)
            with self._lock:
                if view is not None:
                    self._apply(view)
                elif self._state is _CLOSED:
                    self._transition(_OPEN, trip)

    def _on_error(self, exc: BaseException, generation: int, start: float | None) -> None:
        if (
            self._state is _HALF_OPEN
            and generation == self._generation
            and (not isinstance(exc, Exception) or isinstance(exc, self._ignored_types))
            and self._backend.available
        ):
            period = self._period(generation)
            if period is not None:
                # Give the shared trial permit back (after the call, for an acall).
                release = partial(self._remote, "release", period=period)
                call = self._deferred()
                if call is not None:
                    call.jobs.append(release)
                else:
                    release()
        super()._on_error(exc, generation, start)

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
