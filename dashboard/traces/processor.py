"""Persist finished spans off the request thread: a standard OTel SDK SpanProcessor.

``on_end`` only appends the span to a bounded queue (resilience's BatchDispatcher);
a worker thread converts, masks and bulk-inserts batches. A full queue drops the
span and counts it; a failing database loses that batch and counts it; nothing
ever raises into the code that ended the span. The worker starts on the first
span, so importing, ``migrate`` and ``check`` create neither threads nor connections.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from django.conf import settings
from django.db import close_old_connections
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from resilience._validate import positive, positive_int
from resilience.dispatch import BatchDispatcher

from .convert import SpanRow
from .masking import Masker

logger = logging.getLogger(__name__)

# Local SDK spans, and OTLP-ingested spans already converted (and masked) to rows.
Item = ReadableSpan | SpanRow
Writer = Callable[[Sequence[Item]], int]


class ProcessorStats(TypedDict):
    queued: int
    dropped: int
    written: int
    failed: int
    failed_batches: int


def database_writer(masker: Masker, *, using: str = "default") -> Writer:
    """A writer that stores spans with ``services.write_spans`` on ``using``."""
    from .services import write_spans

    def write(spans: Sequence[Item]) -> int:
        # Like a request: the worker's connection is dropped when broken or older than
        # CONN_MAX_AGE (0 closes it after each batch, so no session outlives its use).
        close_old_connections()
        try:
            return write_spans(spans, masker=masker, using=using)
        finally:
            close_old_connections()

    return write


class DatabaseSpanProcessor(SpanProcessor):
    """Batch finished spans into the database without blocking or raising.

    Args:
        writer: stores a batch, returns rows written; default ``database_writer``.
        masked_keys: sensitive key words for the default writer.
        max_queue: spans waiting at most; beyond that ``on_end`` drops and counts.
        max_batch: spans per write (one transaction).
        interval: seconds the worker waits for a batch to fill.
        on_first_span: called once, on the worker's start (e.g. start retention).
        using: the database alias written to. Each span is tagged with that database's
            NAME when it ends and is discarded (counted as failed) if the NAME has
            changed by the time it would be written: test runners swap in a test
            database and restore the real one at teardown, and spans still queued
            then (flushed at interpreter exit) must not land in the real database.

    Set ``enabled = False`` to ignore spans for a while (tests that make requests
    whose own spans would get in the way); ignored spans are not counted as dropped.
    """

    def __init__(
        self,
        *,
        writer: Writer | None = None,
        masked_keys: Sequence[str] = (),
        masked_value_patterns: Sequence[str] | None = None,
        max_queue: int = 20_000,
        max_batch: int = 1_000,
        interval: float = 0.5,
        on_first_span: Callable[[], object] | None = None,
        name: str = "traces-db-writer",
        using: str | None = "default",
    ) -> None:
        masker = (
            Masker(masked_keys)
            if masked_value_patterns is None
            else Masker(masked_keys, masked_value_patterns)
        )
        self._writer = writer or database_writer(masker, using=using or "default")
        # The alias's settings dict: test runners change its NAME in place.
        self._database: Mapping[str, Any] = settings.DATABASES[using] if using else {}
        # Checked now: the dispatcher is only built on the first span, inside on_end.
        self._max_queue = positive_int("max_queue", max_queue)
        self._max_batch = positive_int("max_batch", max_batch)
        self._interval = positive("interval", interval)
        self._name = name
        self._on_first_span = on_first_span
        self.enabled = True
        self._dispatcher: BatchDispatcher[tuple[Item, object]] | None = None
        self._lock = threading.Lock()
        self._offer_lock = threading.Lock()
        self._shutdown = False
        self._dropped = 0
        self._written = 0
        self._failed = 0
        self._failed_batches = 0
        self._last_error_log = -1e9

    def _start(self) -> BatchDispatcher[tuple[Item, object]]:
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = BatchDispatcher(
                    self._write,
                    max_queue=self._max_queue,
                    max_batch=self._max_batch,
                    interval=self._interval,
                    name=self._name,
                )
                if self._on_first_span is not None:
                    try:
                        self._on_first_span()
                    except Exception:
                        logger.exception("on_first_span hook failed")
            return self._dispatcher

    def _write(self, batch: list[tuple[Item, object]]) -> None:
        database = self._database.get("NAME")
        spans = [span for span, tag in batch if tag == database]
        self._failed += len(batch) - len(spans)
        if not spans:
            return
        try:
            self._written += self._writer(spans)
        except Exception as exc:
            self._failed += len(spans)
            self._failed_batches += 1
            now = time.monotonic()
            if now - self._last_error_log >= 60:  # one log line a minute while it lasts
                self._last_error_log = now
                logger.warning(
                    "could not store %d spans (%d lost so far): %r", len(spans), self._failed, exc
                )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            context = span.context
            if not self.enabled or context is None or not context.trace_flags.sampled:
                return
            if self._shutdown:
                self._dropped += 1
                return
            dispatcher = self._dispatcher or self._start()
            dispatcher.submit((span, self._database.get("NAME")))
        except Exception:
            self._dropped += 1

    def offer(self, spans: Sequence[Item]) -> int | None:
        """Queue finished spans received from elsewhere (OTLP ingest), all or none.

        OTLP ingest offers SpanRows, masked already: the writer stores them as they are.

        Returns:
            How many were queued, or None (nothing queued, nothing counted as dropped)
            when the queue has no room for all of them or the processor is shut down:
            the sender is told to retry later. A span the queue still drops (ended
            locally in the same instant) is counted as dropped and not in the result.
            While ``enabled`` is False the spans are ignored and reported as queued.
        """
        if self._shutdown:
            return None
        if not self.enabled or not spans:
            return len(spans)
        dispatcher = self._dispatcher or self._start()
        tag = self._database.get("NAME")
        with self._offer_lock:
            if len(dispatcher) + len(spans) > self._max_queue:
                return None
            return dispatcher.submit_many([(span, tag) for span in spans])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write everything queued so far; False if not done within the timeout."""
        dispatcher = self._dispatcher
        return True if dispatcher is None else dispatcher.flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 5_000) -> None:
        """Flush, then stop the worker. Spans ended afterwards are dropped and counted."""
        self._shutdown = True
        with self._lock:
            dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.shutdown(timeout_millis / 1000)

    def stats(self) -> ProcessorStats:
        """Counters for metrics and health: queued now, dropped, written, failed to write."""
        dispatcher = self._dispatcher
        return {
            "queued": len(dispatcher) if dispatcher is not None else 0,
            "dropped": self._dropped + (dispatcher.dropped if dispatcher is not None else 0),
            "written": self._written,
            "failed": self._failed,
            "failed_batches": self._failed_batches,
        }
