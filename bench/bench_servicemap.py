"""Service map: the rollup's cost per span and the map query over 1,000,000 stored spans.

Spans come from ``bench._traces_data.generate`` (~10 per trace over 50 minutes, 6
services, ~40 % of child spans in another service than their parent) bulk-inserted into
a temporary SQLite database (WAL). Rows:

- the rollup folding all of them in (what a first start over an existing store costs),
  and folding 20,000 new spans into a rollup that is up to date (the steady state);
- the map over the last hour (every stored span) and the last 15 minutes, from the
  rollup; the API end to end (its catch-up check, the query, JSON);
- beside them, the naive way: a self-join of the spans grouped by caller and callee
  (counts only, no p95), to show what the rollup saves.

Target: the map over 1,000,000 stored spans <= 500 ms. BENCH_QUICK=1: 100k spans.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench._harness import Row, Table, quick
from bench._traces_data import generate
from bench.bench_traces import _client, _django, _timed


def _naive(since_us: int) -> object:
    from django.db import connection

    from dashboard.traces.convert import to_datetime
    from dashboard.traces.models import SpanRecord

    table = connection.ops.quote_name(SpanRecord._meta.db_table)
    since = to_datetime(since_us).replace(tzinfo=None)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.service, c.service, COUNT(*), SUM(c.status = 'ERROR') "  # noqa: S608
            f"FROM {table} c JOIN {table} p "
            "ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id "
            "WHERE c.start >= %s AND p.service <> c.service GROUP BY 1, 2",
            [str(since)],
        )
        return cursor.fetchall()


def _run(total: int) -> list[Table]:
    from django.db.models import Value
    from django.db.models.functions import Concat, Substr
    from django.utils import timezone

    from dashboard.servicemap import selectors
    from dashboard.servicemap.models import EdgeMinute
    from dashboard.servicemap.rollup import rollup
    from dashboard.traces.convert import to_us
    from dashboard.traces.models import SpanRecord

    now = timezone.now()
    seconds, _ = generate(total, now)
    stored = SpanRecord.objects.count()
    started = time.perf_counter()
    result = rollup(now=now)
    first = time.perf_counter() - started
    assert result.caught_up, result
    more = 20_000 if not quick() else 5_000
    last = SpanRecord.objects.latest("id").id
    generate(more, now + timedelta(seconds=1))
    # generate() is seeded: give the new spans their own traces (a non-hex first digit).
    SpanRecord.objects.filter(id__gt=last).update(
        trace_id=Concat(Value("z"), Substr("trace_id", 2))
    )
    started = time.perf_counter()
    extra = rollup(now=now)
    steady = time.perf_counter() - started
    rows_used = EdgeMinute.objects.count()
    rollup_table = Table(
        title=f"Service map rollup ({stored:,} spans stored in {seconds:.0f} s; "
        f"{result.calls:,} edge calls; {rows_used:,} edge-minute rows)",
        unit="µs/span",
        baseline="fold in the whole store",
        rows=[
            Row(
                "fold in the whole store",
                first * 1e6 / result.processed,
                f"{result.processed:,} spans in {first:.1f} s",
            ),  # fmt: skip
            Row(
                "fold in 20k new spans (up to date before; over the same 50 min)",
                steady * 1e6 / max(extra.processed, 1),
                f"{extra.processed:,} spans in {steady * 1000:.0f} ms",
            ),  # fmt: skip
        ],
    )
    repeats = 3 if quick() else 7
    client = _client()
    hour = selectors.service_map(range_key="1h")
    rows = []
    for label, run in (
        ("map, last hour (all spans), selector",
         lambda: selectors.service_map(range_key="1h")),
        ("map, last 15 min, selector", lambda: selectors.service_map(range_key="15m")),
        ("GET /api/observability/service-map?range=1h",
         lambda: client.get("/api/observability/service-map", {"range": "1h"})),
        ("GET /service-map/?range=1h (page)",
         lambda: client.get("/service-map/", {"range": "1h"})),
    ):  # fmt: skip
        median, worst = _timed(run, repeats)
        rows.append(Row(label, median, f"max {worst:.0f} ms"))
    since = to_us(now) - 3_600_000_000
    started = time.perf_counter()
    _naive(since)
    naive = (time.perf_counter() - started) * 1000
    rows.append(Row("naive self-join of spans, last hour (counts only)", naive, "one run"))
    query_table = Table(
        title=f"Service map over {stored + more:,} stored spans ({len(hour.edges)} edges, "
        f"{sum(e.calls for e in hour.edges):,} calls in the last hour; median of {repeats}; "
        "target <= 500 ms)",
        unit="ms",
        baseline="map, last hour (all spans), selector",
        rows=rows,
    )
    return [rollup_table, query_table]


def tables() -> list[Table]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-servicemap-"))
    try:
        with _django(tmp):
            return _run(100_000 if quick() else 1_000_000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from bench._harness import print_tables

    print_tables(tables())
