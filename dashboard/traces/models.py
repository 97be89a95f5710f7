from __future__ import annotations

from django.db import models
from django.db.models import Q


class SpanStatus(models.TextChoices):
    UNSET = "UNSET", "Unset"
    OK = "OK", "OK"
    ERROR = "ERROR", "Error"


class SpanKind(models.TextChoices):
    INTERNAL = "INTERNAL", "Internal"
    SERVER = "SERVER", "Server"
    CLIENT = "CLIENT", "Client"
    PRODUCER = "PRODUCER", "Producer"
    CONSUMER = "CONSUMER", "Consumer"


class SpanRecord(models.Model):
    """One finished OpenTelemetry span, as exported by this process."""

    trace_id = models.CharField(max_length=32, help_text="32 lowercase hex digits")
    span_id = models.CharField(max_length=16, help_text="16 lowercase hex digits")
    # NULL (not "") marks a root span: it reads as "no parent" in SQL and in the admin.
    parent_span_id = models.CharField(max_length=16, null=True, blank=True)  # noqa: DJ001
    name = models.CharField(max_length=255)
    service = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=SpanKind.choices, default=SpanKind.INTERNAL)
    start = models.DateTimeField()
    end = models.DateTimeField()
    duration_us = models.BigIntegerField(help_text="end - start in microseconds")
    status = models.CharField(max_length=5, choices=SpanStatus.choices, default=SpanStatus.UNSET)
    status_message = models.TextField(blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True)
    events = models.JSONField(
        default=list, blank=True, help_text="[{name, time_us, attributes}], exceptions included"
    )
    links = models.JSONField(
        default=list,
        blank=True,
        help_text="[{trace_id, span_id, attributes}], capped",
    )
    resource = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "span"
        permissions = [("ingest_spans", "Can send spans over OTLP (POST /v1/traces)")]
        indexes = [
            # service and name too: "does this trace have a span with ..." (search's
            # EXISTS probe) is answered from the index, without reading span rows.
            models.Index(fields=["trace_id", "start", "service", "name"], name="span_trace_lookup"),
            models.Index(fields=["start"], name="span_start"),
            # trace_id last: searches read trace ids from these indexes alone, without
            # a table lookup per matching span (10x faster on a million rows).
            models.Index(fields=["service", "start", "trace_id"], name="span_service_start"),
            models.Index(fields=["name", "start", "trace_id"], name="span_name_start"),
            models.Index(fields=["duration_us"], name="span_duration"),
            # Errors are few: a partial index keeps "errors only" cheap and small.
            models.Index(fields=["start"], condition=Q(status="ERROR"), name="span_error_start"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.trace_id}/{self.span_id})"

    @property
    def is_error(self) -> bool:
        return self.status == SpanStatus.ERROR


class TraceSummary(models.Model):
    """One row per trace, kept up to date as its spans are written.

    Searching "traces" over a million spans needs per-trace figures (duration, span
    and error counts) without a GROUP BY over every span: the span writer upserts
    these in the same transaction as the spans.
    """

    trace_id = models.CharField(max_length=32, primary_key=True)
    root_name = models.CharField(max_length=255)
    root_service = models.CharField(max_length=255)
    # Lower is a better root: parentless spans first, then remote-parent, then earliest.
    root_rank = models.BigIntegerField()
    start_us = models.BigIntegerField(help_text="earliest span start, µs since the epoch")
    end_us = models.BigIntegerField(help_text="latest span end, µs since the epoch")
    duration_us = models.BigIntegerField()
    span_count = models.IntegerField()
    error_count = models.IntegerField()

    class Meta:
        verbose_name = "trace"
        indexes = [
            # duration in the key: "min duration, newest first" filters while walking the
            # index, reading only the rows it keeps (PostgreSQL: no heap fetch per trace).
            models.Index(fields=["start_us", "duration_us"], name="trace_start_duration"),
            models.Index(fields=["duration_us"], name="trace_duration"),
            models.Index(fields=["span_count", "start_us"], name="trace_span_count_start"),
            models.Index(fields=["error_count", "start_us"], name="trace_errors"),
            # "Errors only", newest first: walked in order, stopping after a page (the
            # index above makes the database sort every failed trace first).
            models.Index(
                fields=["start_us", "trace_id"],
                condition=Q(error_count__gt=0),
                name="trace_error_start",
            ),
            models.Index(fields=["end_us"], name="trace_end"),
        ]

    def __str__(self) -> str:
        return f"{self.root_name} ({self.trace_id})"


class SpanAttribute(models.Model):
    """A searchable attribute of a stored trace: the index behind ``key=value`` search.

    One row per trace, key and value, with the earliest and latest start of the
    trace's spans that carry it. Written by the span writer in the spans' transaction,
    kept exact by retention; what is indexed and how values are spelled:
    ``attribute_index``. The table is its primary key alone (created by migration
    0007: SQLite ``WITHOUT ROWID``, PostgreSQL with the starts included).
    """

    pk = models.CompositePrimaryKey("key", "value", "trace_id")
    key = models.CharField(max_length=128)
    value = models.CharField(max_length=257, help_text="s<string>, b<true|false> or n<number>")
    trace_id = models.CharField(max_length=32)
    first_us = models.BigIntegerField(help_text="earliest start of its spans, µs since the epoch")
    last_us = models.BigIntegerField(help_text="latest start of its spans, µs since the epoch")

    class Meta:
        verbose_name = "span attribute"

    def __str__(self) -> str:
        return f"{self.key}={self.value[1:]}"
