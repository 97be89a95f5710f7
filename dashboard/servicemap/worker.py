"""The periodic rollup: a daemon thread that calls :func:`rollup.rollup` every few seconds.

Concurrency model: one thread per worker (:class:`dashboard.periodic.PeriodicThread`)
runs ``run_once`` every ``interval`` seconds, the first run one interval after
``start``. The rollup itself serialises with the page's on-demand runs through its own
lock (see :mod:`dashboard.servicemap.rollup`), so the worker and pages never
count a span twice. The runtime object starts it (not at import, not in ``ready()``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from django.db import close_old_connections

from dashboard.periodic import PeriodicThread

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
        self._clock = clock
        self._periodic = PeriodicThread(
            self.run_once, interval=interval, name=name, what="service map rollup"
        )
        self.interval = self._periodic.interval
        self.runs = 0
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
        return self._periodic.start()

    @property
    def running(self) -> bool:
        return self._periodic.running

    @property
    def errors(self) -> int:
        """Runs that raised (logged, and the loop went on)."""
        return self._periodic.errors

    def stop(self, timeout: float = 5.0) -> None:
        self._periodic.stop(timeout)
