"""Move slow work off the caller's thread: a bounded queue drained in batches.

Modelled on OpenTelemetry's batch span processor: ``submit`` appends to a bounded
deque and never blocks or raises; a full queue drops the item and counts it; one
daemon worker wakes on an Event, hands batches to the handler, and ``flush`` /
``shutdown`` wait with a timeout. Shutdown is idempotent. A forked child gets a
fresh worker (threads do not survive ``fork``) and an empty queue: the items queued
before the fork belong to the parent, which still delivers them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from resilience._validate import positive, positive_int

__all__ = ["BatchDispatcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BatchDispatcher(Generic[T]):
    """Deliver submitted items to ``handler`` in batches on a background thread.

    Args:
        handler: called with a list of up to ``max_batch`` items; exceptions are
            logged and counted in ``handler_errors``, the batch is not retried.
        max_queue: items held at most; beyond it ``submit`` drops and counts.
        max_batch: items per handler call.
        interval: seconds the worker waits for a batch to fill before delivering.
        name: the worker thread's name.
    """

    def __init__(
        self,
        handler: Callable[[list[T]], object],
        *,
        max_queue: int = 10_000,
        max_batch: int = 500,
        interval: float = 0.2,
        name: str = "resilience-dispatch",
    ) -> None:
        self._handler = handler
        self.max_queue = positive_int("max_queue", max_queue)
        self.max_batch = positive_int("max_batch", max_batch)
        self.interval = positive("interval", interval)
        self._name = name
        self._queue: deque[T] = deque()
        self._stopped = False
        self.dropped = 0
        self.delivered = 0
        self.handler_errors = 0
        self._start_worker()
        _alive.add(self)

    def _start_worker(self) -> None:
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        self._queue.clear()
        if not self._stopped:
            self._start_worker()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, item: T) -> bool:
        """Queue ``item``; returns False (and counts a drop) when full or shut down."""
        queue = self._queue
        if self._stopped or len(queue) >= self.max_queue:
            self.dropped += 1
            return False
        queue.append(item)
        if len(queue) >= self.max_batch:
            self._wake.set()
        return True

    def submit_many(self, items: Sequence[T]) -> int:
        """Queue several items; returns how many were accepted."""
        return sum(1 for item in items if self.submit(item))

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver everything queued so far; True if done within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush, then stop the worker. Later calls do nothing."""
        if self._stopped:
            return
        self.flush(timeout)
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            if self._stopped:
                self._drain()
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[T] = []
            with self._idle:
                self._in_flight += 1
            try:
                while queue and len(batch) < self.max_batch:
                    batch.append(queue.popleft())
                try:
                    self._handler(batch)
                    self.delivered += len(batch)
                except Exception:
                    self.handler_errors += 1
                    logger.exception("batch handler %r failed", self._handler)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()
        with self._idle:
            self._idle.notify_all()


_alive: weakref.WeakSet[BatchDispatcher[Any]] = weakref.WeakSet()


def _restart_after_fork() -> None:
    for dispatcher in list(_alive):
        dispatcher._after_fork_in_child()


os.register_at_fork(after_in_child=_restart_after_fork)
