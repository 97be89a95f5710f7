"""Late commits on PostgreSQL: a span committed below the watermark is still rolled up.

A second database session plays the other span writer: it takes a lower id, keeps its
transaction open while this session stores higher ids and runs the rollup, then commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models.sql import InsertQuery

from dashboard.servicemap import horizon, rollup
from dashboard.servicemap.models import EdgeMinute, RollupWatermark
from dashboard.traces.models import SpanRecord
from tests.dashboard.servicemap.spans import make
from tests.dashboard.servicemap.test_rollup import _full_recompute, _table

pytestmark = pytest.mark.django_db(transaction=True)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="ids commit in order on SQLite"
)


@pytest.fixture
def other() -> Iterator[Any]:
    """Another session of the same database, in an open transaction."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    wrapper.set_autocommit(False)
    try:
        yield wrapper
    finally:
        wrapper.rollback()
        wrapper.set_autocommit(True)
        wrapper.close()


def _insert(wrapper: Any, record: SpanRecord, *, with_id: bool = False) -> None:
    fields = [f for f in SpanRecord._meta.concrete_fields if with_id or not f.primary_key]
    query = InsertQuery(SpanRecord)
    query.insert_values(fields, [record])
    with wrapper.cursor() as cursor:
        for sql, params in query.get_compiler(connection=wrapper).as_sql():
            cursor.execute(sql, params)


def _next_id(wrapper: Any) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id'))",
            [connection.ops.quote_name(SpanRecord._meta.db_table)],
        )
        return int(cursor.fetchone()[0])


def test_sqlite_has_no_horizon() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("SQLite only")
    assert horizon.horizon() is None


@postgres_only
def test_a_lower_id_committed_after_a_run_is_rolled_up_by_a_later_run(other: Any) -> None:
    root = make(service="web")
    _insert(other, make(service="api", parent=root.span_id, save=False))  # lower id, open
    make(service="db", parent=root.span_id)  # higher id, committed

    first = rollup.rollup()
    late = SpanRecord.objects.filter(service="api")
    assert not late.exists()  # not visible yet
    # The run stopped below the open writer's id: nothing it might commit is skipped.
    assert first.watermark <= root.id  # the open writer took root.id + 1
    assert ("web", "db") not in {(r.caller, r.callee) for r in EdgeMinute.objects.all()}

    other.commit()
    rollup.rollup()
    assert late.exists()
    assert _table() == _full_recompute()
    assert {(r.caller, r.callee) for r in EdgeMinute.objects.all()} == {
        ("web", "api"),
        ("web", "db"),
    }
    SpanRecord.objects.filter(pk__in=late).delete()


@postgres_only
def test_a_writer_holding_an_id_before_it_writes_anything_holds_the_map_back(
    other: Any,
) -> None:
    # A sequence value taken with no row written yet: the writer has no transaction id,
    # so pg_snapshot_xmin alone would not see it.
    root = make(service="web")
    held = _next_id(other)
    make(service="db", parent=root.span_id)
    assert rollup.rollup().watermark < held
    record = make(service="api", parent=root.span_id, save=False)
    record.id = held
    _insert(other, record, with_id=True)
    other.commit()
    result = rollup.rollup()
    assert result.caught_up
    assert RollupWatermark.objects.get(pk=1).last_span_id >= held
    assert _table() == _full_recompute()
    assert EdgeMinute.objects.filter(caller="web", callee="api").exists()


@postgres_only
def test_with_no_other_transaction_open_a_run_folds_everything_at_once() -> None:
    root = make(service="web")
    child = make(service="db", parent=root.span_id)
    result = rollup.rollup()
    assert result.watermark == child.id
    assert result.caught_up
    assert _table() == _full_recompute()
