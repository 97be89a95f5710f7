"""Trace search on PostgreSQL as the store grows: the same filters at 1M, 3M and 10M spans.

A throw-away cluster (``python -m tests.services postgres start DIR``, fsync off) holds
the project's tables (``migrate``). Spans are generated inside the database with
``generate_series`` (no Python per row), in the same 50-minute window each time, so a
bigger store means denser traffic, as a busier fleet makes it; their trace summaries
are aggregated from the new spans. Each filter runs ``search_traces`` (the query work
of the search page, without its template) and is timed by its median of a few runs;
the growth column is each size against the first.

``BENCH_TRACE_SIZES`` (spans, comma-separated, default ``1000000,3000000,10000000``;
BENCH_QUICK=1: ``100000,300000``) picks the sizes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._harness import Row, Table, quick

WINDOW_US = 50 * 60 * 1_000_000

# One trace per row of "batch", then its spans (about 10 each); see the module docstring.
_TRACES = """
CREATE TEMP TABLE batch AS
SELECT md5('t' || i::text) AS trace_id,
       2 + floor(random() * 17)::int AS size,
       (ARRAY['gateway','orders','payments','inventory','search','auth'])
           [1 + floor(random() * 6)::int] AS root_service,
       %(now_us)s - %(window)s + floor(random() * %(window)s)::bigint AS t0,
       100 + exp(11 + 1.2 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::bigint
           AS duration
FROM generate_series(%(first)s, %(last)s) AS i
"""

_SPANS = """
INSERT INTO traces_spanrecord (trace_id, span_id, parent_span_id, name, service, kind,
    start, "end", duration_us, status, status_message, attributes, events, resource, links)
SELECT b.trace_id,
       substr(md5(b.trace_id || j::text), 1, 16),
       CASE WHEN j = 0 THEN NULL ELSE substr(md5(b.trace_id || '0'), 1, 16) END,
       CASE WHEN j = 0 THEN 'GET /' || b.root_service || '/{id}'
            WHEN s.op <= 6 THEN s.service || '.'
                || (ARRAY['get','list','create','update','query','call'])[s.op]
            WHEN s.op = 7 THEN 'GET /' || s.service || '/{id}'
            ELSE 'POST /' || s.service END,
       s.service,
       CASE WHEN j = 0 THEN 'SERVER' ELSE 'INTERNAL' END,
       to_timestamp(s.start_us / 1e6), to_timestamp((s.start_us + s.length) / 1e6),
       s.length,
       CASE WHEN s.error THEN 'ERROR' ELSE 'UNSET' END,
       CASE WHEN s.error THEN 'timeout' ELSE '' END,
       jsonb_build_object(
           'http.status_code', CASE WHEN s.error THEN 503
               ELSE (ARRAY[200,200,200,201,404])[1 + floor(random() * 5)::int] END,
           'user.id', 'u-' || floor(random() * 5000)::int,
           'region', (ARRAY['eu','us','ap'])[1 + floor(random() * 3)::int]),
       CASE WHEN s.error THEN jsonb_build_array(jsonb_build_object(
           'name', 'exception', 'time_us', s.start_us + s.length,
           'attributes', jsonb_build_object('exception.type', 'TimeoutError')))
            ELSE '[]'::jsonb END,
       jsonb_build_object('service.name', s.service, 'telemetry.sdk.language', 'python'),
       '[]'::jsonb
FROM batch AS b
CROSS JOIN LATERAL generate_series(0, b.size - 1) AS j
CROSS JOIN LATERAL (
    SELECT CASE WHEN j = 0 OR r.a < 0.6 THEN b.root_service
                ELSE (ARRAY['gateway','orders','payments','inventory','search','auth'])
                    [1 + floor(r.b * 6)::int] END AS service,
           1 + floor(r.c * 8)::int AS op,
           r.d < 0.03 AS error,
           CASE WHEN j = 0 THEN b.t0
                ELSE b.t0 + floor(r.e * greatest(b.duration / 2, 1))::bigint END AS start_us,
           CASE WHEN j = 0 THEN b.duration
                ELSE 1 + floor(r.f * greatest(b.duration / 2, 1))::bigint END AS length
    FROM (SELECT random() + 0 * j AS a, random() AS b, random() AS c, random() AS d,
                 random() AS e, random() AS f) AS r
) AS s
"""

_SUMMARIES = """
INSERT INTO traces_tracesummary (trace_id, root_name, root_service, root_rank, start_us,
    end_us, duration_us, span_count, error_count)
SELECT b.trace_id, 'GET /' || b.root_service || '/{id}', b.root_service, b.t0, b.t0,
       b.t0 + b.duration, b.duration, b.size, e.errors
FROM batch AS b
JOIN (SELECT trace_id, count(*) FILTER (WHERE status = 'ERROR') AS errors
      FROM traces_spanrecord WHERE id > %(after)s GROUP BY trace_id) AS e
  USING (trace_id)
"""

# The attribute index rows the span writer would add (dashboard.traces.attribute_index):
# one per trace, key and value, with the first and last start of its spans; the
# generated values are strings and ints, spelled "s..." and "n...".
_ATTRIBUTES = """
INSERT INTO traces_spanattribute (key, value, trace_id, first_us, last_us)
SELECT a.key,
       CASE jsonb_typeof(a.value) WHEN 'string' THEN 's' ELSE 'n' END || (a.value #>> '{}'),
       s.trace_id,
       min((extract(epoch FROM s.start) * 1000000)::bigint),
       max((extract(epoch FROM s.start) * 1000000)::bigint)
FROM traces_spanrecord AS s
CROSS JOIN LATERAL jsonb_each(s.attributes) AS a(key, value)
WHERE s.id > %(after)s
GROUP BY 1, 2, 3
ON CONFLICT (key, value, trace_id) DO UPDATE SET
    first_us = LEAST(traces_spanattribute.first_us, excluded.first_us),
    last_us = GREATEST(traces_spanattribute.last_us, excluded.last_us)
"""

CASES: dict[str, dict[str, Any]] = {
    "default: most recent": {},
    "sort: longest": {"sort": "longest"},
    "sort: most spans": {"sort": "spans"},
    "sort: most errors": {"sort": "errors"},
    "errors only": {"errors_only": True},
    "min duration 1s": {"min_duration_us": 1_000_000},
    "service=payments (any span)": {"service": "payments"},
    "service=payments called by gateway (map edge)": {"service": "payments", "caller": "gateway"},
    "called by gateway alone": {"caller": "gateway"},
    "span name=auth.call": {"name": "auth.call"},
    "service + name + errors": {"service": "orders", "name": "orders.query", "errors_only": True},
    "attr user.id=u-77 + name": {"attribute": ("user.id", "u-77"), "name": "search.list"},
    "attr user.id=u-77 alone": {"attribute": ("user.id", "u-77")},
    "page 20, most recent": {"page": 20},
}


def _sizes() -> list[int]:
    default = "100000,300000" if quick() else "1000000,3000000,10000000"
    return [int(s) for s in os.environ.get("BENCH_TRACE_SIZES", default).split(",") if s]


def _grow(cursor: Any, spans: int, now_us: int, first_trace: int) -> tuple[int, int]:
    """Add about ``spans`` spans (~10 a trace); returns (spans added, next trace index)."""
    cursor.execute("SELECT coalesce(max(id), 0) FROM traces_spanrecord")
    after = cursor.fetchone()[0]
    traces = spans // 10
    last = first_trace + traces - 1
    params = {"now_us": now_us, "window": WINDOW_US, "first": first_trace, "last": last}
    cursor.execute("DROP TABLE IF EXISTS batch")
    cursor.execute(_TRACES, params)
    cursor.execute(_SPANS)
    added = cursor.rowcount
    cursor.execute(_SUMMARIES, {"after": after})
    cursor.execute(_ATTRIBUTES, {"after": after})
    cursor.execute("DROP TABLE batch")
    return added, last + 1


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _measure(repeats: int) -> dict[str, float]:
    from dashboard.traces.selectors import TraceQuery, distinct_values, search_traces

    def search(params: dict[str, Any]) -> Callable[[], object]:
        return lambda: search_traces(query=TraceQuery(**params))

    results = {label: _median_ms(search(params), repeats) for label, params in CASES.items()}
    results["distinct span names"] = _median_ms(lambda: distinct_values(field_name="name"), repeats)
    return results


def tables() -> list[Table]:
    directory = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    started = subprocess.run(
        [sys.executable, "-m", "tests.services", "postgres", "start", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        os.environ["DATABASE_URL"] = started.stdout.strip().splitlines()[-1]
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        os.environ.setdefault("TRACES_ENABLED", "0")
        os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.utils import timezone

        from dashboard.traces.convert import to_us

        call_command("migrate", verbosity=0, interactive=False)
        now_us = to_us(timezone.now())
        repeats = 3 if quick() else 5
        measured: list[tuple[int, float, dict[str, float]]] = []
        stored = next_trace = 0
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
            cursor.execute("SET maintenance_work_mem = '256MB'")
            for size in _sizes():
                began = time.perf_counter()
                added, next_trace = _grow(cursor, size - stored, now_us, next_trace)
                stored += added
                cursor.execute("VACUUM ANALYZE traces_spanrecord")
                cursor.execute("VACUUM ANALYZE traces_tracesummary")
                cursor.execute("VACUUM ANALYZE traces_spanattribute")
                seconds = time.perf_counter() - began
                print(f"  {stored:,} spans stored (+{added:,} in {seconds:.0f} s)", flush=True)
                measured.append((stored, seconds, _measure(repeats)))
    finally:
        subprocess.run(
            [sys.executable, "-m", "tests.services", "postgres", "stop", str(directory)],
            capture_output=True,
        )
    first_size = measured[0][0]
    result = []
    for stored, seconds, timings in measured:
        base = measured[0][2]
        rows = [
            Row(label, ms, f"{ms / base[label]:.2f}x the {first_size:,}-span time")
            for label, ms in timings.items()
        ]
        result.append(
            Table(
                f"Trace search on PostgreSQL, {stored:,} spans (search_traces, median of "
                f"{repeats}; grown by generate_series in {seconds:.0f} s)",
                "ms",
                "default: most recent",
                rows,
            )
        )
    return result


if __name__ == "__main__":
    from bench._harness import print_tables

    print_tables(tables())
