"""The attribute index: one row per trace, key and value instead of one per span.

The new table is its primary key alone, created here in SQL (Django cannot declare a
SQLite ``WITHOUT ROWID`` table nor PostgreSQL's ``INCLUDE``), filled from the per-span
rows of 0006 in batches of ``BATCH`` spans' ids (each batch one ``INSERT ... SELECT
... GROUP BY`` that merges into rows an earlier batch wrote), then put in the old
table's place. Reversed, 0006's table is rebuilt from the stored spans.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.db import migrations, models

BATCH = 5_000
OLD_SHIFT = 10  # 0006's row ids: the span's id << 10 plus the attribute's position
TABLE = "traces_spanattribute"


def rebuild(apps: Any, schema_editor: Any) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    least, greatest = ("LEAST", "GREATEST") if postgres else ("MIN", "MAX")
    key = "PRIMARY KEY (key, value, trace_id)"
    schema_editor.execute(
        f"CREATE TABLE {TABLE}_new (key varchar(128) NOT NULL, value varchar(257) NOT NULL,"
        " trace_id varchar(32) NOT NULL, first_us bigint NOT NULL, last_us bigint NOT NULL, "
        + (f"CONSTRAINT span_attr_pk {key} INCLUDE (first_us, last_us))" if postgres else "")
        + ("" if postgres else f"{key}) WITHOUT ROWID")
    )
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(id), MAX(id) FROM {TABLE}")
        low, high = cursor.fetchone()
        step = BATCH << OLD_SHIFT
        while low is not None and low <= high:
            cursor.execute(
                f"INSERT INTO {TABLE}_new (key, value, trace_id, first_us, last_us)"
                f" SELECT key, value, trace_id, MIN(start_us), MAX(start_us) FROM {TABLE}"
                " WHERE id >= %s AND id < %s GROUP BY key, value, trace_id"
                " ON CONFLICT (key, value, trace_id) DO UPDATE SET"
                f" first_us = {least}({TABLE}_new.first_us, excluded.first_us),"
                f" last_us = {greatest}({TABLE}_new.last_us, excluded.last_us)",
                [low, low + step],
            )
            low += step
    schema_editor.execute(f"DROP TABLE {TABLE}")
    schema_editor.execute(f"ALTER TABLE {TABLE}_new RENAME TO {TABLE}")


def restore(apps: Any, schema_editor: Any) -> None:
    """Back to 0006: its per-span table, rebuilt from the stored spans."""
    schema_editor.execute(f"DROP TABLE {TABLE}")
    schema_editor.create_model(apps.get_model("traces", "SpanAttribute"))
    import_module("dashboard.traces.migrations.0006_span_attribute_index").backfill(
        apps, schema_editor
    )


class Migration(migrations.Migration):
    dependencies = [
        ("traces", "0006_span_attribute_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(rebuild, restore)],
            state_operations=[
                migrations.DeleteModel(name="SpanAttribute"),
                migrations.CreateModel(
                    name="SpanAttribute",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "key",
                                "value",
                                "trace_id",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("key", models.CharField(max_length=128)),
                        (
                            "value",
                            models.CharField(
                                help_text="s<string>, b<true|false> or n<number>", max_length=257
                            ),
                        ),
                        ("trace_id", models.CharField(max_length=32)),
                        (
                            "first_us",
                            models.BigIntegerField(
                                help_text="earliest start of its spans, µs since the epoch"
                            ),
                        ),
                        (
                            "last_us",
                            models.BigIntegerField(
                                help_text="latest start of its spans, µs since the epoch"
                            ),
                        ),
                    ],
                    options={"verbose_name": "span attribute"},
                ),
            ],
        ),
    ]
