"""A daemon thread that calls a function every few seconds until stopped.

Concurrency model: ``start``/``stop`` take a lock only to swap the thread; the loop waits
on an Event, so ``stop`` ends it at once (the first call is one interval after
``start``). A call that raises is logged and counted in ``errors``; the loop goes on.
Shared by the background workers: traces and checkpoint retention, the service-map
rollup and the alert evaluator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from resilience._validate import positive

logger = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``tick`` every ``interval`` seconds on a daemon thread named ``name``;
    ``what`` names a failed call in the log."""

    def __init__(self, tick: Callable[[], object], *, interval: float, name: str, what: str):
        self.interval = positive("interval", interval)
        self._tick = tick
        self._name = name
        self._what = what
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> bool:
        """Start the thread unless it runs already; True if this call started it."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            return True

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._tick()
            except Exception:
                self.errors += 1
                logger.exception("%s failed", self._what)
