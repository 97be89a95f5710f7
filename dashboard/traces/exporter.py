"""The same persistence as a SpanExporter, for OTel's own BatchSpanProcessor."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .masking import Masker
from .processor import Writer, database_writer

logger = logging.getLogger(__name__)


class DatabaseSpanExporter(SpanExporter):
    """Store spans as SpanRecord rows; use inside ``BatchSpanProcessor``.

    DatabaseSpanProcessor is the default (it counts drops and is measured faster
    in bench/bench_traces.py); this exporter lets any OTel pipeline write here.
    """

    def __init__(
        self,
        *,
        writer: Writer | None = None,
        masked_keys: Sequence[str] = (),
        masked_value_patterns: Sequence[str] | None = None,
    ) -> None:
        masker = (
            Masker(masked_keys)
            if masked_value_patterns is None
            else Masker(masked_keys, masked_value_patterns)
        )
        self._writer = writer or database_writer(masker)
        self.written = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.written += self._writer(spans)
        except Exception as exc:
            self.failed += len(spans)
            logger.warning("could not store %d spans: %r", len(spans), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
