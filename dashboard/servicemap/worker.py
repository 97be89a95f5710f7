"""The periodic rollup: a daemon thread that calls :func:`rollup.rollup` every few seconds.

Concurrency model: one thread per worker runs ``run_once`` every ``interval`` seconds
(the first run one interval after ``start``); ``start``/``stop`` take ``_lock`` only to
swap the thread. The rollup itself serialises with the page's on-demand runs through
its own lock (see :mod:`dashboard.servicemap.rollup`), so the worker and pages never
count a span twice. The runtime object starts it (not at import, not in ``ready()``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from django.db import close_old_connections

from resilience._validate import positive

from .rollup import RollupResult, rollup

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0


class RollupWorker:
    """Folds newly stored spans into the service map every ``interval`` seconds.

    Args:
        interval: seconds between runs.
        clock: wall-clock seconds since the epoch (prunes rows older than the longest range).
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.time,
        name: str = "servicemap-rollup",
    ) -> None:
        self.interval = positive("interval", interval)
        self._clock = clock
        self._name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.errors = 0
        self.last_result: RollupResult | None = None

    def run_once(self) -> RollupResult:
        """One catch-up now, on the calling thread."""
        close_old_connections()
        try:
            result = rollup(now=datetime.fromtimestamp(self._clock(), UTC))
        finally:
            close_old_connections()
        self.runs += 1
        self.last_result = result
        return result

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
                self.run_once()
            except Exception:
                self.errors += 1
                logger.exception("service map rollup failed")
