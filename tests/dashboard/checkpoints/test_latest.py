from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from dashboard.checkpoints import latest, store
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore
from resilience.checkpoint import StateCheckpointManager

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    yield tmp_path / "media"


def manager(when: float | None = None) -> StateCheckpointManager:
    """A manager on its own store: another process, as far as hints go."""
    clock = time.time if when is None else (lambda: when)
    return StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=clock
    )


def hinted(reader: StateCheckpointManager) -> dict[tuple[str, str], int]:
    return reader.store.index.hints._seq  # type: ignore[attr-defined,no-any-return]


def test_another_writers_newer_checkpoint_is_found_past_the_hint() -> None:
    reader, writer = manager(), manager(time.time() - 3600)  # its clock is behind
    first = reader.save_checkpoint({"n": 1}, "a", "w")
    assert reader.get_latest_checkpoint("a", "w") == first
    assert hinted(reader) == {("a", "w"): Checkpoint.objects.get(pk=first).seq}
    second = writer.save_checkpoint({"n": 2}, "a", "w")
    writer.save_checkpoint({"n": 3}, "a", "other")
    assert reader.get_latest_checkpoint("a", "w") == second
    assert hinted(reader)[("a", "w")] == Checkpoint.objects.get(pk=second).seq


def test_deleting_the_hinted_checkpoint_falls_back_to_the_one_before() -> None:
    reader = manager()
    first = reader.save_checkpoint({"n": 1}, "a", "w")
    second = reader.save_checkpoint({"n": 2}, "a", "w")
    assert reader.get_latest_checkpoint("a", "w") == second
    Checkpoint.objects.filter(pk=second).delete()  # by another process's retention
    assert reader.get_latest_checkpoint("a", "w") == first
    Checkpoint.objects.filter(pk=first).delete()
    assert reader.get_latest_checkpoint("a", "w") is None
    assert ("a", "w") not in hinted(reader)
    third = manager().save_checkpoint({"n": 3}, "a", "w")  # a new seq may reuse a freed one
    assert reader.get_latest_checkpoint("a", "w") == third


def test_retention_cleanup_and_a_full_window_of_other_saves() -> None:
    reader = manager()
    ids = [reader.save_checkpoint({"n": n}, "a", "w") for n in range(3)]
    assert reader.get_latest_checkpoint("a", "w") == ids[-1]
    reader.cleanup(keep_last=1)
    assert list(Checkpoint.objects.filter(workflow_id="w").values_list("pk", flat=True)) == [
        ids[-1]
    ]
    assert reader.get_latest_checkpoint("a", "w") == ids[-1]
    other = manager()
    for n in range(latest.WINDOW + 1):  # more saves elsewhere than the hinted query reads
        other.save_checkpoint({"n": n}, "b", f"w{n % 5}")
    newest = other.save_checkpoint({"n": "last"}, "a", "w")
    for n in range(latest.WINDOW + 1):
        other.save_checkpoint({"n": n}, "b", f"w{n % 5}")
    assert reader.get_latest_checkpoint("a", "w") == newest
    Checkpoint.objects.filter(pk=newest).delete()
    assert reader.get_latest_checkpoint("a", "w") == ids[-1]
    assert reader.load_checkpoint(ids[-1]) == {"n": 2}


def test_the_hinted_query_reads_the_newest_rows_through_the_seq_index() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the plan is SQLite's; PostgreSQL chooses by its statistics")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + latest._hinted_sql(connection), [1, "a", "w"])
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "autoindex" in plan and "seq>?" in plan.replace(" ", ""), plan
