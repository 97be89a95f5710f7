"""Trace storage: persistence throughput, paced load, search at 1M spans, a 2,000-span trace page.

Runs Django itself against a temporary SQLite database (WAL, as in production).
BENCH_QUICK=1 shrinks everything (100k stored spans instead of 1M).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench._harness import Row, Table, per_call_ns, quick
from bench._traces_data import big_trace, generate, sdk_spans

# ---- Django on a temporary database ---------------------------------------------------


@contextmanager
def _django(tmp: Path) -> Iterator[None]:
    import django
    from django.apps import apps

    path = tmp / "bench.sqlite3"
    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        os.environ.setdefault("TRACES_ENABLED", "0")  # measure processors, not the global one
        os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
        django.setup()
    from django.core.management import call_command
    from django.db import connections

    connection = connections["default"]
    connection.close()
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict["NAME"] = str(path)
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield
    finally:
        connections.close_all()
        connection.settings_dict["NAME"] = old_name


def _clear() -> None:
    from dashboard.traces.models import SpanAttribute, SpanRecord, TraceSummary

    SpanAttribute.objects.all().delete()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()


# ---- 1. sustained persistence ---------------------------------------------------------


def _bulk_create_writer() -> Callable[[Sequence[ReadableSpan]], int]:
    """The ORM alternative: one model instance per span, bulk_create in batches."""
    from django.db import connection, transaction

    from dashboard.traces.attribute_store import write_attributes
    from dashboard.traces.conf import DEFAULT_MASKED_KEYS
    from dashboard.traces.convert import span_rows, to_datetime
    from dashboard.traces.masking import Masker
    from dashboard.traces.models import SpanRecord
    from dashboard.traces.services import upsert_summaries

    masker = Masker(DEFAULT_MASKED_KEYS)

    def write(spans: Sequence[ReadableSpan]) -> int:
        rows, deltas = span_rows(spans, masker)
        records = []
        for row in rows:
            fields = row._asdict()
            start_us, end_us = fields.pop("start_us"), fields.pop("end_us")
            del fields["root_class"]  # the summary's, not a column
            start, end = to_datetime(start_us), to_datetime(end_us)
            records.append(
                SpanRecord(start=start, end=end, duration_us=end_us - start_us, **fields)
            )
        with transaction.atomic(), connection.cursor() as cursor:
            SpanRecord.objects.bulk_create(records, batch_size=500)
            write_attributes(cursor, connection, rows)  # the same index as write_spans
            upsert_summaries(deltas)
        return len(records)

    return write


def _drain_rate(
    feed: Callable[[Any], None], flush: Callable[[], object], spans: list[Any]
) -> float:
    start = time.perf_counter()
    for span in spans:
        feed(span)
    flush()
    return len(spans) / (time.perf_counter() - start)


def _persistence(spans: list[ReadableSpan]) -> Table:
    from dashboard.traces.conf import DEFAULT_MASKED_KEYS
    from dashboard.traces.exporter import DatabaseSpanExporter
    from dashboard.traces.models import SpanRecord
    from dashboard.traces.processor import DatabaseSpanProcessor

    n = len(spans)
    results: dict[str, list[float]] = {}
    repeats = 1 if quick() else 3

    def ours(**kwargs: Any) -> float:
        processor = DatabaseSpanProcessor(
            masked_keys=DEFAULT_MASKED_KEYS, max_queue=n, max_batch=1000, **kwargs
        )
        rate = _drain_rate(processor.on_end, lambda: processor.force_flush(120_000), spans)
        stats = processor.stats()
        processor.shutdown()
        assert stats["written"] == n and stats["dropped"] == 0, stats
        return rate

    def otel() -> float:
        batch = BatchSpanProcessor(
            DatabaseSpanExporter(masked_keys=DEFAULT_MASKED_KEYS),
            max_queue_size=n,
            max_export_batch_size=1000,
            schedule_delay_millis=500,
        )
        rate = _drain_rate(batch.on_end, lambda: batch.force_flush(120_000), spans)
        batch.shutdown()  # type: ignore[no-untyped-call]
        return rate

    variants: dict[str, Callable[[], float]] = {
        "DatabaseSpanProcessor (executemany)": ours,
        "OTel BatchSpanProcessor + DatabaseSpanExporter": otel,
        "DatabaseSpanProcessor, ORM bulk_create writer": lambda: ours(writer=_bulk_create_writer()),
    }
    for _ in range(repeats):
        for label, run in variants.items():
            _clear()
            results.setdefault(label, []).append(run())
            assert SpanRecord.objects.count() == n
    _clear()
    return Table(
        title=f"Span persistence into SQLite: {n:,} real SDK spans through on_end → rows "
        f"(best of {repeats}, queue large enough for all)",
        unit="spans/s",
        baseline="DatabaseSpanProcessor (executemany)",
        rows=[Row(label, max(values)) for label, values in results.items()],
        lower_is_better=False,
    )


def _on_end_cost(spans: list[ReadableSpan]) -> Table:
    """What ending a span costs the caller's thread: the queue append only."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from dashboard.traces.processor import DatabaseSpanProcessor

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    span = spans[0]
    ours = DatabaseSpanProcessor(writer=len, max_queue=10_000_000, max_batch=10_000)
    otel = BatchSpanProcessor(Discard(), max_queue_size=10_000_000, max_export_batch_size=10_000)
    rows = [
        Row("DatabaseSpanProcessor.on_end", per_call_ns(lambda: ours.on_end(span))),
        Row("OTel BatchSpanProcessor.on_end", per_call_ns(lambda: otel.on_end(span))),
    ]
    ours.shutdown()
    otel.shutdown()  # type: ignore[no-untyped-call]
    return Table(
        title="Cost of on_end on the thread that ends the span (writer/exporter discard)",
        unit="ns/span",
        baseline="DatabaseSpanProcessor.on_end",
        rows=rows,
    )


def _span_cost_with_database() -> Table:
    """``@telemetry.trace`` with the database processor on, against the raw SDK with a
    no-op exporter: what a traced call costs the caller's thread.

    The writer is held back while the calls are timed (one batch, written after), so
    the figure is the caller's own cost; what the writer then costs in CPU is the
    sustained-persistence table's business. Measured side by side with the writer
    running, the two threads share one GIL and the ratio reads the writer's work too.
    """
    from opentelemetry.sdk.trace import TracerProvider

    from bench import bench_telemetry as bt
    from dashboard.traces.processor import DatabaseSpanProcessor
    from resilience import telemetry

    database = DatabaseSpanProcessor(max_queue=2_000_000, max_batch=2_000_000, interval=3600)
    raw = TracerProvider()
    raw.add_span_processor(bt._processor("simple"))
    ours = bt.build_provider("simple", [database])
    telemetry.configure(tracer_provider=ours)
    try:
        rows = [
            Row("bare call", per_call_ns(bt._work, **bt.SPAN_CALLS)),
            Row("floor span", per_call_ns(bt._floor(), **bt.SPAN_CALLS), "contextvar+deque"),
            Row("raw OTel SDK", per_call_ns(bt._raw_sdk(raw), **bt.SPAN_CALLS), "no-op exporter"),
            Row("@telemetry.trace + database", per_call_ns(bt._ours_decorated(), **bt.SPAN_CALLS),
                f"target <= 1.2x; dropped {database.stats()['dropped']}"),
        ]  # fmt: skip
        flushed = database.force_flush(120_000)
        rows[-1].note += f", written after: {database.stats()['written']:,}" + (
            "" if flushed else " (flush timed out)"
        )
    finally:
        telemetry.configure()
        raw.shutdown()
        ours.shutdown()
    return Table(
        title="span cost with the database processor on (SQLite)",
        unit="ns/span",
        baseline="raw OTel SDK",
        rows=rows,
    )


def _paced(spans: list[ReadableSpan]) -> Table:
    from dashboard.traces import conf
    from dashboard.traces.processor import DatabaseSpanProcessor

    seconds = 1.0 if quick() else 3.0
    rows = []
    for rate in (5_000, 10_000, 20_000) if not quick() else (5_000,):
        _clear()
        processor = DatabaseSpanProcessor(
            masked_keys=conf.DEFAULT_MASKED_KEYS,
            max_queue=conf.queue_size(),
            max_batch=conf.batch_size(),
        )
        total = int(rate * seconds)
        tick = 0.005
        per_tick = max(int(rate * tick), 1)
        peak = 0
        start = time.perf_counter()
        sent = 0
        while sent < total:
            for span in spans[sent % len(spans) : sent % len(spans) + per_tick]:
                processor.on_end(span)
            sent += per_tick
            peak = max(peak, processor.stats()["queued"])
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        offered = sent / (time.perf_counter() - start)
        flushed = time.perf_counter()
        processor.force_flush(60_000)
        drain = time.perf_counter() - flushed
        stats = processor.stats()
        processor.shutdown()
        rows.append(
            Row(
                f"offered {rate:,}/s for {seconds:.0f}s",
                offered,
                f"dropped {stats['dropped']}, written {stats['written']:,}, "
                f"peak queue {peak:,}/{conf.queue_size():,}, final flush {drain * 1000:.0f} ms",
            )
        )
    _clear()
    return Table(
        title="Paced load through the default processor (queue 20,000, batches of 1,000)",
        unit="spans/s",
        baseline=rows[0].label,
        rows=rows,
        lower_is_better=False,
    )


# ---- 2. search over many stored spans -------------------------------------------------


def _timed(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    run()  # warm caches and templates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def _client() -> Any:
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(
        username="bench", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def _search(total: int) -> Table:
    from django.utils import timezone

    from dashboard.traces.models import SpanRecord

    _clear()
    seconds, traces = generate(total, timezone.now())
    stored = SpanRecord.objects.count()
    client = _client()
    repeats = 3 if quick() else 7
    cases = {
        "default: last hour, most recent": {},
        "sort: longest": {"sort": "longest"},
        "sort: most spans": {"sort": "spans"},
        "sort: most errors": {"sort": "errors"},
        "errors only": {"errors_only": "on"},
        "min duration 1s": {"min_duration": "1s"},
        "service=payments (any span)": {"service": "payments"},
        "service=payments called by gateway (map edge)": {
            "service": "payments",
            "caller": "gateway",
        },
        "called by gateway alone": {"caller": "gateway"},
        "span name=auth.call": {"name": "auth.call"},
        "service + name + errors": {
            "service": "orders",
            "name": "orders.query",
            "errors_only": "on",
        },
        "attr user.id=u-77 + name": {"attr": "user.id=u-77", "name": "search.list"},
        "attr user.id=u-77 alone": {"attr": "user.id=u-77"},
        "page 20, most recent": {"page": "20"},
        "last 5 minutes, longest": {"lookback": "5m", "sort": "longest"},
    }
    rows = []
    for label, params in cases.items():

        def run(params: dict[str, str] = params) -> None:
            response = client.get("/traces/", params)
            assert response.status_code == 200, response.status_code
            assert b"Some filters are not valid" not in response.content

        median, worst = _timed(run, repeats)
        rows.append(Row(label, median, f"max {worst:.0f} ms"))
    return Table(
        title=f"Search page (GET /traces/ through the test client, median of {repeats}) with "
        f"{stored:,} stored spans in {traces:,} traces — generated in {seconds:.1f} s "
        f"({stored / seconds:,.0f} rows/s, raw executemany)",
        unit="ms",
        baseline="default: last hour, most recent",
        rows=rows,
    )


# ---- 3. one big trace -----------------------------------------------------------------


def _trace_page(stored: int) -> Table:
    size = 2_000
    trace_id, span_id = big_trace(size)
    client = _client()
    repeats = 3 if quick() else 7

    def page() -> None:
        response = client.get(f"/traces/{trace_id}/")
        assert response.status_code == 200 and response.content.count(b"data-depth=") == size

    def partial() -> None:
        assert client.get(f"/traces/{trace_id}/spans/{span_id}/").status_code == 200

    rows = []
    for label, run in (("trace page, 2,000 spans", page), ("span detail partial", partial)):
        median, worst = _timed(run, repeats)
        rows.append(Row(label, median, f"max {worst:.0f} ms"))
    return Table(
        title=f"Trace page through the test client (median of {repeats}; "
        f"{stored:,} other spans stored)",
        unit="ms",
        baseline="trace page, 2,000 spans",
        rows=rows,
    )


def tables() -> list[Table]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-traces-"))
    try:
        with _django(tmp):
            spans = sdk_spans(10_000 if quick() else 40_000)
            result = [_span_cost_with_database(), _persistence(spans), _on_end_cost(spans)]
            result.append(_paced(spans))
            stored = 100_000 if quick() else 1_000_000
            result.append(_search(stored))
            result.append(_trace_page(stored))
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from bench._harness import print_tables

    print_tables(tables())
