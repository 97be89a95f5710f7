"""OTLP ingest: the server-side cost per span of ``POST /v1/traces``, and throughput.

Table 1, in this process: request bodies are what the real exporter sends
(``encode_spans`` from opentelemetry-exporter-otlp-proto-common, the http exporter's
encoder), 512 spans per request (the SDK batch processor's default), through Django's
full request path with the test client (middleware, token auth, the view).

Tables 2 and 3 (``_ingest_server``): a real daphne server on SQLite, and on a
throwaway PostgreSQL cluster when ``initdb`` is installed, fed over HTTP by client
processes using the real OTLPSpanExporter: sustained spans/s until stored, server CPU
µs/span, and what happens at 5,000 spans/s offered. The caller-side cost (the
exporter's encoding) is not ours and is kept out of the sustained run.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench._harness import Row, Table, quick
from bench._traces_data import sdk_spans
from bench.bench_traces import _clear, _django

BATCH = 512


def _best_us_per_span(
    run: Callable[[], object],
    spans: int,
    repeats: int,
    after: Callable[[], object] = lambda: None,
) -> float:
    best = float("inf")
    for _ in range(repeats):
        _clear()
        start = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - start) / spans * 1e6)
        after()  # untimed: e.g. let queued spans reach the database before the next run
    return best


def _ingest_table(count: int) -> Table:
    from django.test import Client

    from dashboard.api import testing
    from dashboard.ingest.decode import parse
    from dashboard.ingest.spans import Limits, convert, masker_for
    from dashboard.traces import conf, tracing
    from dashboard.traces.masking import DEFAULT_VALUE_PATTERNS
    from dashboard.traces.models import SpanRecord
    from dashboard.traces.processor import DatabaseSpanProcessor

    spans = sdk_spans(count)
    bodies = [
        encode_spans(spans[i : i + BATCH]).SerializeToString() for i in range(0, count, BATCH)
    ]
    zipped = [gzip.compress(body, compresslevel=6) for body in bodies]
    limits = Limits(max_spans=10_000, max_attributes=128, max_events=128, max_value_length=4096)
    repeats = 1 if quick() else 3

    def decode() -> None:
        for body in bodies:
            parse(ExportTraceServiceRequest(), body, content_type="application/x-protobuf")

    def decode_convert() -> None:
        cached = masker_for(conf.DEFAULT_MASKED_KEYS, DEFAULT_VALUE_PATTERNS)
        for body in bodies:
            message = parse(
                ExportTraceServiceRequest(), body, content_type="application/x-protobuf"
            )
            convert(message.resource_spans, limits=limits, masker=cached)

    processor = DatabaseSpanProcessor(
        masked_keys=conf.DEFAULT_MASKED_KEYS, max_queue=count, max_batch=1000, using=None
    )
    tracing._processor = processor
    client = Client(HTTP_HOST="localhost")
    token = testing.token_for(testing.make_user("bench-ingest", "traces.ingest_spans"))
    headers: dict[str, Any] = testing.bearer(token)

    def post(payloads: list[bytes], **extra: Any) -> Callable[[], None]:
        def run() -> None:
            for body in payloads:
                response = client.post(
                    "/v1/traces",
                    data=body,
                    content_type="application/x-protobuf",
                    **headers,
                    **extra,
                )
                assert response.status_code == 200, response.content

        return run

    def stored(run: Callable[[], None]) -> Callable[[], None]:
        def all_the_way() -> None:
            run()
            assert processor.force_flush(120_000)
            assert SpanRecord.objects.count() == count

        return all_the_way

    def local() -> None:
        for span in spans:
            processor.on_end(span)
        assert processor.force_flush(120_000)

    try:
        rows = {
            "local SDK spans: on_end → SQLite rows": _best_us_per_span(local, count, repeats),
            "decode protobuf": _best_us_per_span(decode, count, repeats),
            "decode + convert to masked rows": _best_us_per_span(decode_convert, count, repeats),
            "POST /v1/traces → queued (the request)": _best_us_per_span(
                post(bodies), count, repeats, after=lambda: processor.force_flush(120_000)
            ),
            "POST /v1/traces → stored in SQLite": _best_us_per_span(
                stored(post(bodies)), count, repeats
            ),
            "same, gzip bodies": _best_us_per_span(
                stored(post(zipped, HTTP_CONTENT_ENCODING="gzip")), count, repeats
            ),
        }
        dropped = processor.stats()["dropped"]
        assert dropped == 0, dropped
    finally:
        tracing._processor = None
        processor.shutdown()
        _clear()
    return Table(
        title=f"OTLP ingest, server side: {count:,} spans in {len(bodies)} protobuf requests "
        f"of {BATCH} from the real exporter's encoder (best of {repeats}; spans/s = 1e6 / µs)",
        unit="µs/span",
        baseline="local SDK spans: on_end → SQLite rows",
        rows=[
            Row(label, value, f"{1e6 / value:,.0f} spans/s" if value else "")
            for label, value in rows.items()
        ],
    )


def _server_table(seconds: float) -> Table:
    from bench import _ingest_server

    kinds = ["sqlite"]
    try:
        from tests.services import _pg_bin

        _pg_bin("initdb")
        kinds.append("postgres")
    except Exception as exc:  # ServiceMissing, or tests/ not shipped
        print(f"(PostgreSQL skipped: {exc})")
    rows = []
    for kind in kinds:
        r = _ingest_server.run(kind, seconds=seconds)
        database = f", database {r['database_us']:.1f} µs/span" if kind == "postgres" else ""
        rows += [
            Row(
                f"{kind}: sustained, 2 exporters back to back → stored",
                r["spans_per_s"],
                f"{r['stored']:,} spans in {r['seconds']:.1f} s; {r['refused_sustained']:,} "
                "refused with 503 (retried)",
            ),
            Row(
                f"{kind}: server CPU per span → spans/s on one free core",
                1e6 / r["server_us"],
                f"{r['server_us']:.1f} µs/span server CPU{database} (health polls, "
                f"{r['health_ms']:.1f} ms each, subtracted)",
            ),
            Row(
                f"{kind}: 5,000 spans/s offered (exporter.export, paced)",
                r["paced_stored"] / seconds,
                f"sent {r['paced_sent']:,}, stored {r['paced_stored']:,}, "
                f"refused {r['paced_refused']:,}, dropped {r['paced_dropped']:,}, "
                f"failed exports {r['paced_failed']:,}",
            ),
        ]
    return Table(
        title=f"OTLP ingest into a real server (daphne), the real OTLP/HTTP exporter, "
        f"protobuf, {seconds:g} s runs",
        unit="spans/s",
        baseline=rows[0].label,
        rows=rows,
        lower_is_better=False,
    )


def tables() -> list[Table]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with _django(tmp):
            first = _ingest_table(5_120 if quick() else 40_960)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [first, _server_table(4.0 if quick() else 10.0)]


if __name__ == "__main__":
    from bench._harness import print_tables

    print_tables(tables())
