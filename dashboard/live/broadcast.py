"""Breaker transitions → the live pages' sockets, event-driven and coalesced per breaker.

The bus listener runs on whatever thread tripped the breaker, so it only records the
breaker's name in a dirty set and wakes the broadcaster task on the server's event
loop (``call_soon_threadsafe``; the sockets live on that loop). The task renders each
dirty breaker's *current* state once and hands that one message to every socket of the
group in this process (:mod:`.fanout`, not the channel layer), so any
number of transitions in a burst become one push, and a breaker is pushed at most once
per ``min_interval`` (leading edge immediately, trailing edge when the interval ends):
a flapping breaker cannot flood a socket. History rows follow in a second message once
the recorder has written them.

Cluster mode (``REDIS_URL`` set: channels-redis, breakers shared through Redis). Every
process pushes to *its own* browsers only: the live groups get a per-process suffix
(``live.breakers.<host>-<pid>``), and each process pushes every transition it sees, the
ones it made and the ones it ``observed`` through Redis. So a browser gets each
transition exactly once, from the process it is connected to (never twice, as it would
if every process pushed to shared groups), whichever process (a server, or a worker
without Django) made it; and the per-process numbers of the sampler (metrics, limiter
rates, call counters) never interleave on one page. History rows of an observed
transition are written by the process that made it, so their push waits
``observed_history_delay`` seconds for that write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from channels.db import DatabaseSyncToAsync

from dashboard import runtime, selectors
from dashboard.breakers import recorder
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.events import BreakerStateChanged, Event

from . import fragments
from .fanout import local_groups

logger = logging.getLogger(__name__)


def group_suffix(cluster: bool, process: str) -> str:
    """The live groups' suffix: "" on one process, ``.<process>`` in cluster mode."""
    if not cluster:
        return ""
    # Channels accepts ASCII letters, digits, "-", "_" and "." in names under 100 chars.
    return "." + re.sub(r"[^A-Za-z0-9_.-]", "-", process)[:60]


PAGES = ("overview", "breakers", "limiters", "metrics")


def group(page: str) -> str:
    """The live group of ``page`` for this process, from the runtime's identity (so it
    is right after a fork and under ``override_settings``)."""
    me = runtime.identity()
    return f"live.{page}" + group_suffix(me.cluster, me.live_process)


def groups() -> tuple[str, ...]:
    """Every live page's group of this process."""
    return tuple(group(page) for page in PAGES)


class Broadcaster:
    """Coalesces breaker changes and pushes them to the live pages' groups."""

    def __init__(
        self,
        *,
        min_interval: float = 0.1,
        history: int = 10,
        observed_history_delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval = min_interval
        self.history = history
        self.observed_history_delay = observed_history_delay
        self._observed: set[str] = set()
        self._clock = clock
        self._lock = threading.Lock()
        self._dirty: dict[str, None] = {}
        self._last_push: dict[str, float] = {}
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.events = 0
        self.coalesced = 0
        self.pushes = 0
        self.errors = 0

    # -- any thread ---------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Bus listener: mark the breaker dirty and wake the task (cheap, never raises)."""
        if isinstance(event, BreakerStateChanged) and self._loop is not None:
            if event.observed:
                self._observed.add(event.name)
            self.mark(event.name)

    def mark(self, name: str) -> None:
        """Schedule a push of breaker ``name``'s current state."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with self._lock:
            self.events += 1
            if name in self._dirty:
                self.coalesced += 1
                return
            self._dirty[name] = None
            if self._scheduled:
                return
            self._scheduled = True
        # RuntimeError: the loop was closed under us (server or test shutting down).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    # -- the event loop -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The server's event loop once a live page connected (send group messages there)."""
        return self._loop

    def start(self) -> None:
        """Run on the current event loop (a new loop, e.g. in tests, restarts it)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self.running:
            return
        self._loop = loop
        self._wake = wake = asyncio.Event()
        with self._lock:
            self._dirty.clear()
            self._scheduled = False
        self._task = loop.create_task(self._run(wake), name="live-broadcaster")
        warming = loop.run_in_executor(None, fragments.warm_up)
        warming.add_done_callback(_log_failure)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._loop = None
        for pending in [task, *self._side_tasks]:
            if pending is not None and not pending.done():
                pending.cancel()
        for pending in [task, *self._side_tasks]:
            if pending is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
        self._side_tasks.clear()

    def reset(self) -> None:
        with self._lock:
            self._dirty.clear()
            self._last_push.clear()
            self._scheduled = False
        self._observed.clear()
        self.events = self.coalesced = self.pushes = self.errors = 0

    def _take_due(self) -> tuple[list[str], float | None]:
        """Names due for a push now, and seconds until the next one is (None: none left)."""
        now = self._clock()
        due: list[str] = []
        wait = math.inf
        with self._lock:
            self._scheduled = False
            for name in list(self._dirty):
                ready_at = self._last_push.get(name, -math.inf) + self.min_interval
                if ready_at <= now:
                    del self._dirty[name]
                    self._last_push[name] = now
                    due.append(name)
                else:
                    wait = min(wait, ready_at - now)
        return due, None if wait is math.inf else wait

    async def _run(self, wake: asyncio.Event) -> None:
        wait: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
            wake.clear()
            due, wait = self._take_due()
            if due:
                try:
                    await self.push(due)
                except Exception:
                    self.errors += 1
                    logger.exception("live broadcast of %s failed", due)

    async def push(self, names: Iterable[str]) -> None:
        """Send the current state of ``names`` now; their history follows.

        Each fragment is rendered once and the same message goes to every socket of
        this process (:mod:`.fanout`), not through the channel layer.
        """
        pushed: list[str] = []
        for card in await _cards(list(names)):
            message = {"type": "breaker.state", "name": card.name, "state": card.state.value}
            if local_groups.count(group("breakers")):
                await local_groups.group_send(
                    group("breakers"), {**message, "html": fragments.breaker_state(card, oob=True)}
                )
            if local_groups.count(group("overview")):
                await local_groups.group_send(
                    group("overview"), {**message, "html": fragments.overview_chip(card, oob=True)}
                )
            pushed.append(card.name)
            self.pushes += 1
        if pushed and self.history:
            observed = [name for name in pushed if name in self._observed]
            self._observed.difference_update(observed)
            own = [name for name in pushed if name not in observed]
            for batch, delay in ((own, 0.0), (observed, self.observed_history_delay)):
                if batch:
                    task = asyncio.get_running_loop().create_task(self._push_history(batch, delay))
                    self._side_tasks.add(task)
                    task.add_done_callback(self._side_tasks.discard)

    async def _push_history(self, names: list[str], delay: float = 0.0) -> None:
        try:
            if delay > 0:
                # Another process made these transitions and writes their rows.
                await asyncio.sleep(delay)
            rendered = await _render_histories(names, self.history)
            for name, html in rendered:
                await local_groups.group_send(
                    group("breakers"), {"type": "breaker.history", "name": name, "html": html}
                )
        except Exception:
            self.errors += 1
            logger.exception("live history push of %s failed", names)

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "coalesced": self.coalesced,
            "pushes": self.pushes,
            "errors": self.errors,
            "running": self.running,
        }


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("live warm-up failed", exc_info=future.exception())


def _render_histories_sync(names: list[str], limit: int) -> list[tuple[str, str]]:
    # The recorder batches its inserts; flushing first puts the new rows in the query.
    recorder.flush(1.0)
    return [
        (name, fragments.breaker_history(name, selectors.breaker_history(name=name, limit=limit)))
        for name in names
    ]


# Not thread-sensitive: the flush may wait, and must not hold up other consumers' queries.
_render_histories = DatabaseSyncToAsync(_render_histories_sync, thread_sensitive=False)


def _cards_sync(names: list[str]) -> list[selectors.BreakerCard]:
    # The same card the page shows (trace link included); its history follows separately.
    breakers = (circuit_breaker_registry.get(name) for name in names)
    return [selectors.card_for(b, history=0) for b in breakers if b is not None]


_cards = DatabaseSyncToAsync(_cards_sync, thread_sensitive=False)


broadcaster = Broadcaster()
