"""The circuit breaker's state machine: admission, outcomes, transitions, events.

:class:`resilience.circuit_breaker.CircuitBreaker` is the public face of this class;
everything here is private to the package.

Concurrency model: a short ``threading.Lock`` guards state reads and writes, never
the protected call. A CLOSED call takes no lock at all when the failure-rate and
slow-call rules are off: it reads a generation number and the state, runs the
function, and records the outcome only if it changes something. Every transition
bumps the generation, so outcomes of calls admitted before a transition never
affect the new state (a late success cannot close a breaker that has reopened).
Events are queued under the lock and delivered after it is released, in order.
Whether anyone listens is checked with ``self._listeners or bus._listeners`` (two
slot reads) rather than the ``bus.active`` property, which costs a call; for a
rejection, ``CallRejected in bus._wanted`` (a bus listener subscribed to other event
types only, like the fleet's, does not make rejected calls build events).

Half-open trials hold a slot until they end, even past the period that admitted
them: when a half-open period ends with trials this object admitted still running,
their count is kept per generation in ``_stale`` (``_stale_total`` in all) and still
counts against ``half_open_max_calls``; an outcome carrying that old generation
gives the slot back and changes nothing else. Only an operator action forgets them.

The fields, their first values and the per-config values the hot path reads are set
up in :mod:`resilience.circuit_breaker._fields`.
"""

from __future__ import annotations

import logging
from typing import Any

from resilience.circuit_breaker._fields import CoreFields
from resilience.circuit_breaker._support import CircuitState, describe, iso, open_error
from resilience.errors import CallTimeoutError, CircuitOpenError
from resilience.events import BreakerStateChanged, CallRejected, Event, bus

__all__ = ["BreakerCore", "CircuitState", "open_error"]

_iso = iso  # the name resilience.redis.breaker imports

logger = logging.getLogger("resilience.circuit_breaker")


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED


class BreakerCore(CoreFields):
    """State and bookkeeping of a breaker; see the module docstring."""

    __slots__ = ()

    def _admit(self) -> int:
        """Take the lock, do the lazy OPEN -> HALF_OPEN step, take a trial slot."""
        rejected = False
        remaining: float | None = None
        with self._lock:
            state = self._state
            if state is _OPEN:
                remaining = self._open_until - self._clock()
                if remaining > 0:
                    rejected = True
                else:
                    self._to_half_open()
                    state = _HALF_OPEN
            if state is _HALF_OPEN:
                if self._in_flight + self._stale_total >= self._max_trials:
                    rejected, remaining = True, 0.0
                else:
                    self._in_flight += 1
                    self._local_trials += 1
            elif state is _FORCED_OPEN:
                rejected, remaining = True, None
            generation = self._generation
        if self._pending:
            self._drain()
        if rejected:
            raise self._rejection(remaining)
        return generation

    def _rejection(self, remaining: float | None) -> CircuitOpenError:
        self._rejected.add()
        if self._listeners or CallRejected in bus._wanted:
            self._announce_rejection(remaining)
        if remaining:
            return open_error(self._name, remaining, self._open_message)
        return CircuitOpenError(self._name, remaining)

    def _announce_rejection(self, remaining: float | None) -> None:
        event = CallRejected(
            name=self._name, time=self._wall_clock(), state=self._state.value, remaining=remaining
        )
        self._deliver(event)

    def _on_error(self, exc: BaseException, generation: int, start: float | None) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, self._ignored_types):
            self._ignored.add()
            if self._state is _HALF_OPEN or self._stale:
                with self._lock:
                    if generation != self._generation:
                        self._release_stale(generation)
                    elif self._state is _HALF_OPEN:
                        self._end_trial()
        elif isinstance(exc, self._failure_types):
            self._failed.add()
            self._record(generation, describe(exc, self._wall_clock()))
        else:
            # Not a failure type: the dependency answered, so it counts as a success.
            self._on_success(generation, start)

    def _on_success(self, generation: int, start: float | None) -> None:
        limit = self._slow_limit
        if start is not None and limit is not None:
            elapsed = self._clock() - start
            if elapsed >= limit:
                self._slow_call(generation, elapsed, limit)
                return
        self._successful.add()
        if self._window is not None or self._failure_count or self._state is _HALF_OPEN:
            self._record(generation, None)

    def _slow_call(self, generation: int, elapsed: float, limit: float) -> None:
        self._slow.add()
        self._failed.add()
        failure = {
            "type": "SlowCall",
            "message": f"call took {elapsed:.3f}s (slow_call_duration {limit:g}s)",
            "time": self._wall_clock(),
        }
        self._record(generation, failure)

    def _on_stream_end(self, generation: int, slowest: float) -> None:
        """A stream ended well (exhausted or abandoned); ``slowest`` is its longest step."""
        limit = self._slow_limit
        if limit is not None and slowest >= limit:
            self._slow_call(generation, slowest, limit)
        else:
            self._on_success(generation, None)

    def _timed_out(self, generation: int) -> CallTimeoutError:
        """Record a call that overran ``call_timeout`` (always a failure); the error."""
        limit = self._call_timeout or 0.0
        exc = CallTimeoutError(self._name, limit)
        self._failed.add()
        self._record(generation, describe(exc, self._wall_clock()))
        return exc

    def _end_trial(self) -> None:
        """A trial of the current half-open period ended; the lock is held."""
        self._in_flight -= 1
        if self._local_trials:
            self._local_trials -= 1

    def _release_stale(self, generation: int) -> None:
        """A trial from an earlier half-open period ended; the lock is held."""
        left = self._stale.get(generation)
        if left is not None:
            self._stale_total -= 1
            if left > 1:
                self._stale[generation] = left - 1
            else:
                del self._stale[generation]

    def _record(self, generation: int, failure: dict[str, Any] | None) -> None:
        """Apply one outcome (``failure`` None means success) to the state machine."""
        with self._lock:
            if failure is not None:
                self._last_failure = failure
            if generation != self._generation:
                if self._stale:
                    self._release_stale(generation)
            else:
                state = self._state
                if state is _CLOSED:
                    self._record_closed(failure is not None)
                elif state is _HALF_OPEN:
                    self._end_trial()
                    if failure is not None:
                        self._transition(_OPEN, f"trial call failed ({failure['type']})")
                    else:
                        self._success_count += 1
                        if self._success_count >= self._success_threshold:
                            self._transition(
                                _CLOSED,
                                f"success_threshold reached "
                                f"({self._success_count} successful trial calls)",
                            )
        if self._pending:
            self._drain()

    def _record_closed(self, failed: bool) -> None:
        window = self._window
        if failed:
            self._failure_count += 1
            if window is not None:
                window.record(True)
            if self._failure_count >= self._failure_threshold:
                self._transition(
                    _OPEN,
                    f"failure_threshold reached ({self._failure_count} consecutive failures)",
                )
                return
        else:
            self._failure_count = 0
            if window is not None:
                window.record(False)
        if window is not None:
            rate = window.rate(self._minimum_calls)
            if rate is not None and rate >= self._rate_threshold:
                self._transition(
                    _OPEN,
                    f"failure_rate_threshold reached "
                    f"({rate:.1f}% of the last {len(window)} calls failed)",
                )

    # -- transitions (all of them happen in _transition, with the lock held) ---------

    def _to_half_open(self) -> None:
        self._transition(_HALF_OPEN, f"timeout elapsed ({self._timeout:g}s open)")

    def _transition(
        self,
        to: CircuitState,
        reason: str,
        *,
        actor: str | None = None,
        note: str | None = None,
    ) -> None:
        from_state = self._state
        window = self._window
        rate = None if window is None else window.rate(self._minimum_calls)
        failure_count = self._failure_count
        now = self._wall_clock()
        # Lock-free readers load the generation before the state, so the generation
        # must change first: a reader then sees a stale generation, never a stale state.
        if self._local_trials:
            self._stale[self._generation] = self._local_trials
            self._stale_total += self._local_trials
            self._local_trials = 0
        self._generation += 1
        self._failure_count = 0
        self._success_count = 0
        self._in_flight = 0
        if window is not None:
            window.clear()
        if to is _OPEN:
            self._opened_at = now
            self._open_until = self._clock() + self._timeout
            self._open_message = (
                f"circuit breaker {self._name!r} is open until {iso(now + self._timeout)}"
            )
        elif to is _FORCED_OPEN:
            self._opened_at = now
        elif to is not _HALF_OPEN:
            self._opened_at = None
        self._state = to
        if self._listeners or bus._listeners:
            self._pending.append(
                BreakerStateChanged(
                    name=self._name,
                    time=now,
                    from_state=from_state.value,
                    to_state=to.value,
                    reason=reason,
                    failure_count=failure_count,
                    failure_rate=rate,
                    actor=actor,
                    note=note,
                )
            )

    def _drain(self) -> None:
        # Deliver queued events in order, by one thread at a time, outside the state
        # lock. A thread that finds another one delivering leaves its event to it;
        # the loop re-checks after releasing so no event is stranded.
        pending = self._pending
        while pending:
            if not self._publish_lock.acquire(blocking=False):
                return
            try:
                while pending:
                    self._deliver(pending.popleft())
            finally:
                self._publish_lock.release()

    def _deliver(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                logger.exception("circuit breaker listener %r failed on %r", listener, event)
        bus.publish(event)

    def _operator(self, to: CircuitState, reason: str, actor: str | None, note: str | None) -> None:
        with self._lock:
            self._transition(to, reason, actor=actor, note=note)
            # An operator starts afresh: trials of earlier periods stop holding slots.
            self._stale.clear()
            self._stale_total = 0
        self._drain()

    def _refresh(self) -> None:
        """The lazy OPEN -> HALF_OPEN step of state reads."""
        if self._state is _OPEN and self._clock() >= self._open_until:
            with self._lock:
                if self._state is _OPEN and self._clock() >= self._open_until:
                    self._to_half_open()
            self._drain()
