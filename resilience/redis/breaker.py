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

Events, and Redis down: see :mod:`resilience.redis._shared_state` (running the script,
applying its replies, pub/sub, resync, operator actions replayed after an outage).

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
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ParamSpec, TypeVar

import redis

from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._core import CircuitState
from resilience.errors import ConfigTypeError
from resilience.redis._client import Backend, check_client, check_tag
from resilience.redis._hub import Hub, hub_for
from resilience.redis._shared_state import Period, SharedStateBreaker, process_id
from resilience.redis.scripts import BREAKER

__all__ = ["RedisCircuitBreaker"]


DEFAULT_PREFIX = "resilience:cb:"

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
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


class RedisCircuitBreaker(SharedStateBreaker):
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

    __slots__ = ()

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
        self._queued_operator = None
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
                        f"{len(window)} calls in {process_id()} failed)"
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
