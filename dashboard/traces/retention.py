"""Background retention: a daemon thread that runs ``services.cleanup_spans`` periodically."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections

from dashboard.periodic import PeriodicThread
from resilience._validate import positive_int

from .services import DELETE_CHUNK, CleanupResult, cleanup_spans

logger = logging.getLogger(__name__)


class RetentionWorker:
    """Deletes expired spans every ``interval`` seconds on a daemon thread.

    Args:
        max_age: keep spans younger than this (None: no age limit).
        max_rows: keep at most this many spans (None: no row limit).
        interval: seconds between runs; the first run is one interval after ``start``.
        clock: wall-clock seconds since the epoch (span times are wall-clock).
        chunk_size: rows per DELETE.
    """

    def __init__(
        self,
        *,
        max_age: timedelta | None,
        max_rows: int | None,
        interval: float,
        clock: Callable[[], float] = time.time,
        chunk_size: int = DELETE_CHUNK,
        name: str = "traces-retention",
    ) -> None:
        self.max_age, self.max_rows = max_age, max_rows
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self._clock = clock
        self._periodic = PeriodicThread(
            self._tick, interval=interval, name=name, what="span retention run"
        )
        self.interval = self._periodic.interval
        self.runs = 0
        self.last_result: CleanupResult | None = None

    def run_once(self) -> CleanupResult:
        """One clean-up now, on the calling thread."""
        close_old_connections()
        try:
            result = cleanup_spans(
                now=datetime.fromtimestamp(self._clock(), UTC),
                max_age=self.max_age,
                max_rows=self.max_rows,
                chunk_size=self.chunk_size,
            )
        finally:
            close_old_connections()
        self.runs += 1
        self.last_result = result
        return result

    def _tick(self) -> None:
        result = self.run_once()
        if result.spans:
            logger.info("retention removed %d spans, %d traces", result.spans, result.traces)

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
