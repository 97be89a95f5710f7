"""Background retention: a daemon thread that runs ``services.cleanup_spans`` periodically."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections

from resilience._validate import positive, positive_int

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
        self.interval = positive("interval", interval)
        self.chunk_size = positive_int("chunk_size", chunk_size)
        self._clock = clock
        self._name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.errors = 0
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
                result = self.run_once()
                if result.spans:
                    logger.info(
                        "retention removed %d spans, %d traces", result.spans, result.traces
                    )
            except Exception:
                self.errors += 1
                logger.exception("span retention run failed")
