"""Data for bench_traces: real SDK spans, a 2,000-span trace, a million generated rows.

Functions that touch the database import Django lazily: the bench sets Django up first.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

SERVICES = ("gateway", "orders", "payments", "inventory", "search", "auth")
OPERATIONS = {
    service: [f"{service}.{verb}" for verb in ("get", "list", "create", "update", "query", "call")]
    + [f"GET /{service}/{{id}}", f"POST /{service}"]
    for service in SERVICES
}
EXC = {
    "exception.type": "TimeoutError",
    "exception.message": "upstream did not answer in 2s",
    "exception.stacktrace": 'Traceback (most recent call last):\n  File "/app/http.py", line 44'
    ', in post\n    raise TimeoutError("upstream did not answer in 2s")\nTimeoutError: ...\n',
}


def memory_tracer(service: str) -> tuple[trace.Tracer, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("bench"), memory


def sdk_spans(count: int, *, per_trace: int = 10) -> list[ReadableSpan]:
    tracer, memory = memory_tracer("bench")
    rng = random.Random(7)
    server: dict[str, AttributeValue] = {
        "http.method": "GET",
        "http.status_code": 200,
        "user.id": "u-42",
    }
    for _ in range(0, count, per_trace):
        with tracer.start_as_current_span("GET /orders/{id}", attributes=server):
            for i in range(per_trace - 1):
                query: dict[str, AttributeValue] = {
                    "db.system": "sqlite",
                    "db.statement": "SELECT 1",
                    "n": i,
                }
                with tracer.start_as_current_span(f"orders.query{i % 4}", attributes=query) as span:
                    if rng.random() < 0.02:
                        span.record_exception(TimeoutError("upstream did not answer in 2s"))
                        span.set_status(Status(StatusCode.ERROR, "timeout"))
    return list(memory.get_finished_spans())[:count]


def generate(total: int, now: datetime) -> tuple[float, int]:
    """Insert ``total`` spans (~10 per trace) started within the last 50 minutes."""
    from django.db import connection, transaction

    from dashboard.traces.attribute_index import attribute_rows
    from dashboard.traces.attribute_store import attribute_upsert_sql
    from dashboard.traces.convert import EPOCH, to_us
    from dashboard.traces.services import _insert_sql, _upsert_sql

    rng = random.Random(42)
    naive_epoch = EPOCH.replace(tzinfo=None)
    now_us = to_us(now)
    window = 50 * 60 * 1_000_000
    resources = {
        s: orjson.dumps({"service.name": s, "telemetry.sdk.language": "python"}).decode()
        for s in SERVICES
    }
    insert, upsert = _insert_sql(connection), _upsert_sql(connection)
    started = time.perf_counter()
    made = traces = 0
    spans: list[tuple[Any, ...]] = []
    summaries: list[tuple[Any, ...]] = []
    indexed: list[tuple[str, int, dict[str, Any]]] = []  # what the attribute index needs
    insert_attributes = attribute_upsert_sql(connection)

    def when(us: int) -> str:
        return str(naive_epoch + timedelta(microseconds=us))

    def flush() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert, spans)
            cursor.executemany(insert_attributes, attribute_rows(indexed))
            cursor.executemany(upsert, summaries)
        spans.clear()
        summaries.clear()
        indexed.clear()

    with connection.cursor() as cursor:
        # Generation only: a big page cache and no fsync (the searches run with defaults).
        cursor.execute("PRAGMA cache_size = -262144")
        cursor.execute("PRAGMA synchronous = OFF")
    while made < total:
        size = min(rng.randint(2, 18), total - made)
        trace_id = f"{rng.getrandbits(128):032x}"
        root_service = rng.choice(SERVICES)
        # In start order (as spans arrive), with jitter, so index inserts stay local.
        t0 = now_us - window + made * window // total + rng.randrange(2_000_000)
        duration = int(rng.lognormvariate(11, 1.2)) + 100  # median ~60 ms, long tail
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(size)]
        errors = 0
        root_name = f"GET /{root_service}/{{id}}"
        for i in range(size):
            if i == 0:
                service, name, parent, start, length = root_service, root_name, None, t0, duration
            else:
                service = root_service if rng.random() < 0.6 else rng.choice(SERVICES)
                name = rng.choice(OPERATIONS[service])
                parent = ids[rng.randrange(i)] if i > 1 and rng.random() < 0.3 else ids[0]
                start = t0 + rng.randrange(max(duration // 2, 1))
                length = rng.randrange(1, max(duration - (start - t0), 2))
            error = rng.random() < 0.03
            errors += error
            status = 503 if error else rng.choice((200, 200, 200, 201, 404))
            attributes = {
                "http.status_code": status,
                "user.id": f"u-{rng.randrange(5000)}",
                "region": rng.choice(("eu", "us", "ap")),
            }
            events = [{"name": "exception", "time_us": start + length, "attributes": EXC}] * error
            indexed.append((trace_id, start, attributes))
            spans.append(
                (
                    trace_id,
                    ids[i],
                    parent,
                    name,
                    service,
                    "SERVER" if i == 0 else "INTERNAL",
                    when(start),
                    when(start + length),
                    length,
                    "ERROR" if error else "UNSET",
                    "timeout" if error else "",
                    orjson.dumps(attributes).decode(),
                    orjson.dumps(events).decode(),
                    "[]",  # links
                    resources[service],
                )
            )
        summaries.append(
            (trace_id, root_name, root_service, t0, t0, t0 + duration, duration, size, errors)
        )
        made += size
        traces += 1
        if len(spans) >= 20_000:
            flush()
    if spans:
        flush()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA cache_size = -2000")
    return time.perf_counter() - started, traces


def big_trace(size: int) -> tuple[str, str]:
    from dashboard.traces.conf import DEFAULT_MASKED_KEYS
    from dashboard.traces.masking import Masker
    from dashboard.traces.services import write_spans

    tracer, memory = memory_tracer("workflow")
    rng = random.Random(3)
    t0 = time.time_ns()
    root = tracer.start_span("run workflow", start_time=t0)
    open_spans = [root]
    for i in range(size - 1):
        parent = open_spans[rng.randrange(len(open_spans))]
        start = t0 + (i + 1) * 1_000_000
        span = tracer.start_span(
            f"step {i % 37}",
            context=trace.set_span_in_context(parent),
            start_time=start,
            attributes={"step": i, "agent.id": f"agent-{i % 9}", "tokens": rng.randrange(900)},
        )
        if rng.random() < 0.01:
            span.record_exception(TimeoutError("tool call timed out"))
            span.set_status(Status(StatusCode.ERROR, "timeout"))
        if len(open_spans) < 6 and rng.random() < 0.5:
            open_spans.append(span)
        else:
            span.end(end_time=start + rng.randrange(100_000, 5_000_000))
    for span in reversed(open_spans[1:]):
        span.end(end_time=t0 + size * 1_000_000)
    root.end(end_time=t0 + (size + 1) * 1_000_000)
    finished = memory.get_finished_spans()
    write_spans(finished, masker=Masker(DEFAULT_MASKED_KEYS))
    return f"{root.get_span_context().trace_id:032x}", f"{root.get_span_context().span_id:016x}"
