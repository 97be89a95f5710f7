"""The worker's side of the fleet: a daemon thread that reports and applies commands.

Concurrency model
-----------------
- The worker's threads never wait for the reporter. The only code of this module
  that runs on them is :meth:`FleetReporter._on_event`, an event-bus listener that
  returns at once for anything but a breaker transition, and otherwise appends the
  event to a bounded deque (``deque.append`` is atomic under the GIL) and sets a
  ``threading.Event``. When the deque is full the event is dropped and counted in
  ``events_dropped``: it never blocks and never raises into the caller. The
  counters are plain ints written by one thread each (a lost increment under a
  race would only under-count a statistic).
- Everything else runs on the reporter thread: reading the registries' snapshots
  (each primitive takes its own lock briefly), encoding, the HTTP round trip,
  applying commands. It owns ``_unsent`` (transitions taken from the deque, kept
  until a report carrying them is answered), ``_acks`` (kept likewise) and
  ``_commands`` (:mod:`resilience.fleet.commands`: the acks of recent command ids, so
  a repeated command is not applied twice). No lock is needed for them: one thread
  touches them.
- Pacing: after a successful report the thread waits ``interval`` seconds (or the
  ``report_interval`` the dashboard's last answer asked for, kept within
  ``MIN_INTERVAL``..``MAX_INTERVAL``), or less
  when a transition or a new ack wakes it (at most one report per ``MIN_GAP``).
  After a failure it backs off exponentially up to ``max_backoff`` (with jitter, so
  a fleet does not return in lockstep) and ignores wake-ups until then; the
  unsent transitions and acks ride on the first report that gets through.
- Pushed commands (a transport with ``receive``, e.g. Redis): a second daemon thread,
  the listener, blocks in ``transport.receive`` and appends each answer to the
  ``_pushed`` deque, then wakes the reporter thread, which applies the commands and
  sends their acks at once (no ``MIN_GAP``: an ack is never batched). The listener
  touches nothing else; after a failed receive it waits (``LISTEN_RETRY``, doubling up
  to ``max_backoff``) and tries again. ``stop`` does not wait for it (it may be blocked
  in a read for ``LISTEN_WAIT`` seconds): it bumps ``_generation``, and a listener of
  an older generation leaves, dropping what it read, when its read returns.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from resilience.circuit_breaker import circuit_breaker_registry
from resilience.events import BreakerStateChanged, Event, EventBus, bus
from resilience.fleet.commands import CommandApplier
from resilience.fleet.protocol import (
    MAX_NAME,
    MAX_PRIMITIVES,
    PROTOCOL_VERSION,
    Ack,
    InstanceInfo,
    Report,
    TransitionEvent,
    encode,
)
from resilience.fleet.transport import PushTransport, Transport, TransportError
from resilience.rate_limiter import rate_limiter_registry

__all__ = ["FleetReporter"]

logger = logging.getLogger(__name__)

MIN_GAP = 0.05
LISTEN_WAIT = 20.0
LISTEN_RETRY = 0.25
MIN_INTERVAL, MAX_INTERVAL = 0.1, 60.0
MAX_EVENTS_PER_REPORT = 500


class _Registry(Protocol):
    def all(self) -> Iterable[Any]: ...
    def get(self, name: str) -> Any: ...


def _transition(event: BreakerStateChanged) -> TransitionEvent:
    return {
        "kind": "breaker_state",
        "name": event.name,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "reason": event.reason,
        "time": event.time,
        "failure_count": event.failure_count,
        "failure_rate": event.failure_rate,
        "actor": event.actor,
        "note": event.note,
    }


def _snapshots(registry: _Registry, kind: str) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = []
    for item in registry.all():
        if len(views) >= MAX_PRIMITIVES:
            break
        try:
            view = item.snapshot()
        except Exception:  # one broken primitive must not stop the others' reports
            logger.exception("fleet: %s %r could not be snapshot", kind, item)
            continue
        if len(str(view.get("name", ""))) <= MAX_NAME:  # longer ones the protocol refuses
            views.append(view)
    return views


class FleetReporter:
    """Reports this process's breakers and limiters to a dashboard, applies its commands.

    Build one with :func:`resilience.fleet.connect` rather than directly. Tests drive
    it without a thread: build it, call :meth:`report_once`, inspect the counters.

    Args:
        transport: sends a report and returns the answer (``HttpTransport``).
        instance: who this process is (see :func:`resilience.fleet.instance_info`).
        interval: seconds between reports when nothing happens.
        max_backoff: the longest wait after failed reports, in seconds.
        max_events: transitions kept while the dashboard is unreachable; more are
            dropped (oldest kept) and counted in ``events_dropped``.
        wall_clock: epoch seconds, for ``sent_at`` and ack times.
        event_bus: where transitions come from (the process-wide bus by default).
        rng: the jitter's random source.

    Raises:
        ValueError: a duration or a size is not positive.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        instance: InstanceInfo,
        interval: float = 1.0,
        max_backoff: float = 10.0,
        max_events: int = 1000,
        wall_clock: Callable[[], float] = time.time,
        event_bus: EventBus = bus,
        breakers: _Registry = circuit_breaker_registry,
        limiters: _Registry = rate_limiter_registry,
        rng: random.Random | None = None,
    ) -> None:
        for field, value in (("interval", interval), ("max_backoff", max_backoff)):
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{field} must be a number > 0, got {value!r}")
        if not isinstance(max_events, int) or max_events < 1:
            raise ValueError(f"max_events must be an int >= 1, got {max_events!r}")
        self.transport = transport
        self.instance = instance
        self.interval = float(interval)
        self.current_interval = self.interval
        """``interval``, or what the dashboard's last answer asked for."""
        self.max_backoff = float(max_backoff)
        self.max_events = max_events
        self._wall_clock = wall_clock
        self._bus = event_bus
        self._breakers = breakers
        self._limiters = limiters
        self._rng = rng or random.Random()
        self._inbox: deque[BreakerStateChanged] = deque()
        self._pushed: deque[dict[str, Any]] = deque()
        self._listener: threading.Thread | None = None
        self._generation = 0
        self._unsent: list[TransitionEvent] = []
        self._acks: list[Ack] = []
        self._commands = CommandApplier(breakers, wall_clock)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.failures = 0
        """Consecutive failed reports (0 while the dashboard answers)."""
        self.reports_sent = 0
        self.reports_failed = 0
        self.events_dropped = 0
        self.answers_pushed = 0
        """Answers with commands received from the dashboard's push (Redis, long-poll)."""
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"<FleetReporter {self.instance['service']} {self.instance['id']} via "
            f"{self.transport!r} sent={self.reports_sent} failed={self.reports_failed}>"
        )

    @property
    def connected(self) -> bool:
        """True when the last report was answered."""
        return self.reports_sent > 0 and self.failures == 0

    @property
    def commands_applied(self) -> int:
        """Commands from the dashboard applied successfully (a repeated one counts once)."""
        return self._commands.applied

    @property
    def running(self) -> bool:
        """True while the reporter thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FleetReporter:
        """Listen for transitions and start the daemon reporter thread (idempotent)."""
        if self.running:
            return self
        self._stopped.clear()
        self._bus.subscribe(self._on_event, types=(BreakerStateChanged,))
        self._thread = threading.Thread(
            target=self._run, name=f"resilience-fleet-{self.instance['id'][:8]}", daemon=True
        )
        self._thread.start()
        if callable(getattr(self.transport, "receive", None)):
            self._generation += 1
            self._listener = threading.Thread(
                target=self._listen,
                args=(self._generation,),
                name=f"resilience-fleet-listen-{self.instance['id'][:8]}",
                daemon=True,
            )
            self._listener.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and reporting; waits up to ``timeout`` for a report in flight."""
        self._bus.unsubscribe(self._on_event)
        self._stopped.set()
        self._wake.set()
        self._generation += 1  # the listener leaves when its blocking read returns
        self._listener = None
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the worker's side: never blocks, never raises ----------------------------------------

    def _on_event(self, event: Event) -> None:
        if type(event) is not BreakerStateChanged or event.observed:
            return
        if len(self._inbox) >= self.max_events:
            self.events_dropped += 1
            return
        self._inbox.append(event)
        self._wake.set()

    # -- the reporter thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.is_set():
            # Cleared before the send: a transition during it wakes the next wait.
            self._wake.clear()
            ok = self.report_once()
            if self._stopped.is_set():
                return
            if not ok:
                self._stopped.wait(self.backoff())
            elif self._wake.wait(self.current_interval) and not (self._pushed or self._acks):
                self._stopped.wait(MIN_GAP)  # let a burst of transitions share a report

    def _listen(self, generation: int) -> None:
        transport: PushTransport = self.transport  # type: ignore[assignment]
        retry = LISTEN_RETRY
        while generation == self._generation:
            try:
                answers = transport.receive(self.instance["id"], LISTEN_WAIT)
            except TransportError as exc:
                if getattr(transport, "push_unsupported", False):
                    logger.info("fleet: the dashboard pushes no commands; they come with reports")
                    return
                logger.debug("fleet: receiving commands failed: %s", exc)
                self._stopped.wait(retry * self._rng.uniform(0.8, 1.0))
                retry = min(retry * 2, self.max_backoff)
                continue
            except Exception:  # the thread must survive anything
                logger.exception("fleet: receiving commands failed")
                self._stopped.wait(retry)
                retry = min(retry * 2, self.max_backoff)
                continue
            retry = LISTEN_RETRY
            if answers and generation == self._generation:
                self.answers_pushed += len(answers)
                self._pushed.extend(answers)
                self._wake.set()

    def backoff(self) -> float:
        """Seconds to wait after ``failures`` consecutive failed reports (with jitter)."""
        exponent = min(max(self.failures - 1, 0), 16)
        delay: float = min(self.max_backoff, self.interval * 2.0**exponent)
        return delay * self._rng.uniform(0.8, 1.0)

    def _take_events(self) -> None:
        inbox = self._inbox
        while inbox:
            self._unsent.append(_transition(inbox.popleft()))
        excess = len(self._unsent) - self.max_events
        if excess > 0:  # keep the newest: they say where each breaker is now
            del self._unsent[:excess]
            self.events_dropped += excess

    def build_report(self) -> Report:
        """The next report: every breaker and limiter now, pending transitions and acks."""
        self._take_events()
        self._seq += 1
        return {
            "protocol": PROTOCOL_VERSION,
            "instance": self.instance,
            "seq": self._seq,
            "sent_at": self._wall_clock(),
            "breakers": _snapshots(self._breakers, "breaker"),
            "limiters": _snapshots(self._limiters, "limiter"),
            "events": self._unsent[:MAX_EVENTS_PER_REPORT],
            "acks": list(self._acks),
            "stats": {
                "reports_sent": self.reports_sent,
                "reports_failed": self.reports_failed,
                "events_dropped": self.events_dropped,
            },
        }

    def report_once(self) -> bool:
        """Send one report and apply the answer's commands; True if it was answered.

        Never raises: a failure is counted in ``reports_failed`` and kept in
        ``last_error``; the transitions and acks it carried are sent with the next one.
        """
        try:
            while self._pushed:  # commands pushed since the last report: acked in this one
                self.handle_answer(self._pushed.popleft())
            report = self.build_report()
            answer = self.transport.send(encode(report))
        except TransportError as exc:
            return self._failed(str(exc))
        except Exception as exc:  # the thread must survive anything
            logger.exception("fleet: report failed")
            return self._failed(repr(exc))
        del self._unsent[: len(report["events"])]
        del self._acks[: len(report["acks"])]
        if self.failures:
            logger.warning("fleet: dashboard reachable again at %s", self.transport)
        self.failures = 0
        self.last_error = None
        self.reports_sent += 1
        if self.handle_answer(answer) or self._unsent:
            self._wake.set()  # the acks (or the rest of the transitions) go out now
        return True

    def handle_answer(self, answer: dict[str, Any]) -> bool:
        """Apply an answer (its commands, its ``report_interval``); True if it had commands.

        Runs on the reporter thread: for an answer to a report, or one pushed by the
        dashboard (the acks are queued for the next report either way).
        """
        asked = answer.get("report_interval")
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked == asked:
            self.current_interval = min(max(float(asked), MIN_INTERVAL), MAX_INTERVAL)
        commands = answer.get("commands")
        if not (isinstance(commands, list) and commands):
            return False
        for command in commands:
            self._acks.append(self.apply(command))
        return True

    def apply(self, command: object) -> Ack:
        """Apply one command from the dashboard; returns its ack (never raises).

        A command id seen before is not applied again: its first ack is returned.
        """
        return self._commands.apply(command)

    def _failed(self, error: str) -> bool:
        if self.failures == 0:
            logger.warning("fleet: report to %s failed (%s); retrying", self.transport, error)
        self.failures += 1
        self.reports_failed += 1
        self.last_error = error
        return False
