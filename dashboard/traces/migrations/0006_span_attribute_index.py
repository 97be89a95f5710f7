"""The span-attribute index table (``SpanAttribute``), backfilled from the stored spans.

The backfill runs here, in batches of ``BATCH`` spans read in primary-key order (each
batch one read and one bulk insert), with the same row builder as the span writer.
On SQLite the covering index of 0002 (every span's attributes, copied) goes: attribute
search reads the new table, and the writer no longer pays for the copy. PostgreSQL
keeps its GIN index, which serves an attribute combined with other span filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import migrations, models

from dashboard.traces.attribute_index import MAX_KEY, MAX_PER_SPAN, MAX_VALUE, encode
from dashboard.traces.convert import to_us

BATCH = 5_000
SHIFT = 10


def attribute_rows(
    spans: Iterable[tuple[int, str, int, dict[str, Any]]],
) -> list[tuple[int, str, str, str, int]]:
    """This table's rows (one per span and attribute, ids ``span pk << SHIFT`` plus
    the position), as the span writer of the time built them (0007 merges them)."""
    rows: list[tuple[int, str, str, str, int]] = []
    for pk, trace_id, start_us, attributes in spans:
        position = pk << SHIFT
        last = position + MAX_PER_SPAN
        for key, value in attributes.items():
            text = encode(value)
            if text is None or len(key) > MAX_KEY or len(text) > MAX_VALUE + 1:
                continue
            rows.append((position, trace_id, key, text, start_us))
            position += 1
            if position == last:
                break
    return rows


def drop_covering_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP INDEX IF EXISTS span_attribute_search")


def restore_covering_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS span_attribute_search"
            " ON traces_spanrecord (attributes, trace_id)"
        )


def backfill(apps: Any, schema_editor: Any) -> None:
    spans = apps.get_model("traces", "SpanRecord")
    attribute = apps.get_model("traces", "SpanAttribute")
    using = schema_editor.connection.alias
    after = 0
    while True:
        batch = list(
            spans.objects.using(using)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", "trace_id", "start", "attributes")[:BATCH]
        )
        if not batch:
            return
        after = batch[-1][0]
        rows = attribute_rows((pk, trace, to_us(start), attrs) for pk, trace, start, attrs in batch)
        attribute.objects.using(using).bulk_create(
            [
                attribute(id=pk, trace_id=trace, key=key, value=value, start_us=start)
                for pk, trace, key, value, start in rows
            ],
            batch_size=2_000,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("traces", "0005_search_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="SpanAttribute",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("trace_id", models.CharField(max_length=32)),
                ("key", models.CharField(max_length=128)),
                (
                    "value",
                    models.CharField(
                        help_text="s<string>, b<true|false> or n<number>", max_length=257
                    ),
                ),
                (
                    "start_us",
                    models.BigIntegerField(help_text="the span's start, µs since the epoch"),
                ),
            ],
            options={
                "verbose_name": "span attribute",
                "indexes": [
                    models.Index(
                        fields=["key", "value", "trace_id", "start_us"], name="span_attr_search"
                    )
                ],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(drop_covering_index, restore_covering_index),
    ]
