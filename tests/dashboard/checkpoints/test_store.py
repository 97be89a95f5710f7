from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import InMemoryStorage
from django.db import transaction

from dashboard.checkpoints import selectors, services, store
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore
from dashboard.models import AuditEntry
from resilience.checkpoint import (
    StateCheckpointManager,
    checkpoint_manager,
    set_default_checkpoint_manager,
)
from resilience.errors import CheckpointCorruptedError, CheckpointError, CheckpointNotFoundError

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[3]
DAY = 86400.0


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Blobs go to a temporary MEDIA_ROOT; the Django manager is the default."""
    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


def blob_path(media: Path, checkpoint_id: str) -> Path:
    return media / "checkpoints" / f"{checkpoint_id}.ckpt"


def save_at(when: float, agent: str = "a", workflow: str = "w", state: Any = None) -> str:
    """Save through the Django store with a given created_at (no sleeping)."""
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=lambda: when
    )
    return manager.save_checkpoint(state if state is not None else {"at": when}, agent, workflow)


def test_default_manager_saves_a_row_and_a_real_file(media: Path) -> None:
    state = {"step": 3, "messages": ["hi", "there"] * 50}
    checkpoint_id = checkpoint_manager.save_checkpoint(state, "agent_1", "wf_1", {"run": 7})

    row = Checkpoint.objects.get(pk=checkpoint_id)
    path = blob_path(media, checkpoint_id)
    assert path.is_file()
    assert path.stat().st_size > row.stored_size
    assert row.storage_path == f"checkpoints/{checkpoint_id}.ckpt"
    assert (row.agent_id, row.workflow_id, row.codec, row.metadata) == (
        "agent_1",
        "wf_1",
        "zstd",
        {"run": 7},
    )
    assert row.created_at == datetime.fromtimestamp(row.created_ts, tz=UTC)
    assert row.ratio == row.raw_size / row.stored_size > 1
    assert checkpoint_manager.load_checkpoint(checkpoint_id) == state
    assert checkpoint_manager.verify_checkpoint(checkpoint_id) is True
    info = checkpoint_manager.get_checkpoint_info(checkpoint_id)
    assert info == row.to_dict()
    assert info["created_at"] == row.created_ts


def test_list_latest_and_filters_are_newest_first() -> None:
    now = time.time()
    a1 = save_at(now - 30, "a", "w1")
    b1 = save_at(now - 20, "b", "w1")
    a2 = save_at(now - 10, "a", "w2")

    assert [c["checkpoint_id"] for c in checkpoint_manager.list_checkpoints()] == [a2, b1, a1]
    assert [c["checkpoint_id"] for c in checkpoint_manager.list_checkpoints("a")] == [a2, a1]
    assert [c["checkpoint_id"] for c in checkpoint_manager.list_checkpoints(workflow_id="w1")] == [
        b1,
        a1,
    ]
    assert [c["checkpoint_id"] for c in checkpoint_manager.list_checkpoints(limit=1)] == [a2]
    assert checkpoint_manager.get_latest_checkpoint("a", "w1") == a1
    assert checkpoint_manager.get_latest_checkpoint("nobody") is None
    assert [c.pk for c in selectors.list_checkpoints(agent_id="a")] == [a2, a1]
    assert [c.pk for c in selectors.list_checkpoints(workflow_id="w1", limit=1)] == [b1]
    assert selectors.totals().count == 3


def test_blob_signed_with_another_secret_key_fails_verification(settings: Any) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    key = store.signing_key()
    assert key != settings.SECRET_KEY.encode() and len(key) == 32

    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert store.signing_key() != key
    assert checkpoint_manager.verify_checkpoint(checkpoint_id) is False
    with pytest.raises(CheckpointCorruptedError, match="HMAC"):
        checkpoint_manager.load_checkpoint(checkpoint_id)


def test_explicit_signing_key_setting_overrides_the_derived_one(settings: Any) -> None:
    settings.CHECKPOINT_SIGNING_KEY = "rotate-me-separately"
    assert store.signing_key() == b"rotate-me-separately"
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    settings.SECRET_KEY = "changed-" + "y" * 50
    assert checkpoint_manager.load_checkpoint(checkpoint_id) == {"x": 1}


def test_compression_comes_from_the_setting(settings: Any) -> None:
    settings.CHECKPOINT_COMPRESSION = "gzip"
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": "y" * 1000}, "a", "w")
    assert Checkpoint.objects.get(pk=checkpoint_id).codec == "gzip"
    with pytest.raises(ImproperlyConfigured, match="compression"):
        settings.CHECKPOINT_COMPRESSION = "lz4"


def test_setup_installs_the_django_manager_without_touching_db_or_files(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "SECRET_KEY": "k" * 50,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    code = (
        "import django; django.setup()\n"
        "from resilience.checkpoint import get_default_checkpoint_manager\n"
        "print('ready:', repr(get_default_checkpoint_manager()))\n"
        "from dashboard import runtime\n"
        "runtime.start(runtime.Features(live=False, traces=False))\n"
        "print('started:', repr(get_default_checkpoint_manager()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    at_ready, started = out.stdout.split("started:")
    # ready() builds it (a Django-configured worker needs no runtime to save checkpoints);
    # the runtime keeps it.
    assert "DjangoCheckpointStore(alias='default', prefix='checkpoints')" in at_ready
    assert "DjangoCheckpointStore(alias='default', prefix='checkpoints')" in started
    assert "signed" in started
    assert list(tmp_path.iterdir()) == []


def test_generic_storage_backend_stores_reads_lists_and_deletes(settings: Any) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "checkpoints": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    settings.CHECKPOINT_STORAGE = "checkpoints"
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": [1, 2]}, "a", "w")

    blobs = store.get_store().blobs
    assert isinstance(blobs.storage, InMemoryStorage)
    assert blobs.storage.exists(f"checkpoints/{checkpoint_id}.ckpt")
    assert list(blobs.iter_blob_ids()) == [checkpoint_id]
    assert checkpoint_manager.load_checkpoint(checkpoint_id) == {"x": [1, 2]}
    checkpoint_manager.delete_checkpoint(checkpoint_id)
    assert not blobs.exists(checkpoint_id)
    assert not Checkpoint.objects.exists()
    with pytest.raises(CheckpointNotFoundError):
        blobs.read_blob(checkpoint_id)


class RenamingStorage(InMemoryStorage):
    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name + "_x7Gq2"


def test_storage_that_renames_blobs_makes_the_save_fail_and_indexes_nothing(
    settings: Any,
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "checkpoints": {"BACKEND": f"{__name__}.RenamingStorage"},
    }
    settings.CHECKPOINT_STORAGE = "checkpoints"
    with pytest.raises(CheckpointError, match="instead of"):
        checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    assert not Checkpoint.objects.exists()
    assert list(store.get_store().blobs.iter_blob_ids()) == []


def test_queryset_delete_removes_blobs_once_committed(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    ids = [checkpoint_manager.save_checkpoint({"i": i}, "a", "w") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        Checkpoint.objects.filter(pk__in=ids[:2]).delete()
    assert [blob_path(media, i).exists() for i in ids] == [False, False, True]


def test_rolled_back_row_delete_keeps_the_blob(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                Checkpoint.objects.filter(pk=checkpoint_id).delete()
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    assert callbacks == []
    assert Checkpoint.objects.filter(pk=checkpoint_id).exists()
    assert blob_path(media, checkpoint_id).exists()


def test_manager_delete_removes_row_and_blob_without_a_second_delete(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        checkpoint_manager.delete_checkpoint(checkpoint_id)
    assert callbacks == []  # the manager deleted the blob itself
    assert not blob_path(media, checkpoint_id).exists()
    assert not Checkpoint.objects.filter(pk=checkpoint_id).exists()


def test_service_delete_removes_row_and_blob_and_is_audited(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_checkpoint(checkpoint_id=checkpoint_id, reason="test", source="api")
    assert not Checkpoint.objects.filter(pk=checkpoint_id).exists()
    assert not blob_path(media, checkpoint_id).exists()
    entry = AuditEntry.objects.get(action="checkpoint.delete")
    assert (entry.target, entry.reason, entry.actor) == (checkpoint_id, "test", "system")

    with pytest.raises(CheckpointNotFoundError):
        services.delete_checkpoint(checkpoint_id=checkpoint_id)
    with pytest.raises(ValueError, match="checkpoint_id"):
        services.delete_checkpoint(checkpoint_id="../../etc/passwd")


def test_service_bulk_delete_removes_rows_and_blobs(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    ids = [checkpoint_manager.save_checkpoint({"i": i}, "a", "w") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        deleted = services.delete_checkpoints(checkpoint_ids=ids[1:])
    assert deleted == 2
    assert list(Checkpoint.objects.values_list("pk", flat=True)) == ids[:1]
    assert [blob_path(media, i).exists() for i in ids] == [True, False, False]


def test_cleanup_keeps_last_per_group_and_older_than(
    media: Path, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    now = time.time()
    old_a = [save_at(now - d * DAY, "a", "w") for d in (30, 20, 10)]
    recent_a = save_at(now - 60, "a", "w")
    old_b = save_at(now - 15 * DAY, "b", "w")

    preview = services.cleanup(keep_last=2, older_than=7 * DAY, dry_run=True)
    assert preview.checkpoint_ids == (old_a[1], old_a[0])
    assert preview.stored_bytes == sum(Checkpoint.objects.get(pk=i).stored_size for i in old_a[:2])
    assert Checkpoint.objects.count() == 5

    with django_capture_on_commit_callbacks(execute=True):
        result = services.cleanup(keep_last=2, older_than=7 * DAY)
    assert set(result.checkpoint_ids) == set(old_a[:2])
    remaining = set(Checkpoint.objects.values_list("pk", flat=True))
    assert remaining == {old_a[2], recent_a, old_b}
    assert [blob_path(media, i).exists() for i in old_a] == [False, False, True]
    assert AuditEntry.objects.get(action="checkpoint.cleanup").details["count"] == 2


def test_cleanup_limited_to_previewed_ids_leaves_newly_eligible_ones() -> None:
    now = time.time()
    first = save_at(now - 3 * DAY)
    second = save_at(now - 2 * DAY)
    save_at(now - 60)
    result = services.cleanup(keep_last=1, only=[first])
    assert result.checkpoint_ids == (first,)
    assert Checkpoint.objects.filter(pk=second).exists()


def test_cleanup_without_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        services.cleanup()
    with pytest.raises(ValueError, match="keep_last"):
        services.cleanup(keep_last=0)


def test_sub_microsecond_created_at_survives_the_row_so_verification_passes() -> None:
    checkpoint_id = save_at(1_700_000_000.1234567)
    row = Checkpoint.objects.get(pk=checkpoint_id)
    assert row.created_ts == 1_700_000_000.1234567
    assert checkpoint_manager.verify_checkpoint(checkpoint_id) is True


def test_rebuild_index_restores_rows_from_blobs() -> None:
    ids = [checkpoint_manager.save_checkpoint({"i": i}, "a", "w", {"i": i}) for i in range(2)]
    before = [row.to_dict() for row in Checkpoint.objects.all()]
    with store.blobs_handled():
        Checkpoint.objects.all().delete()
    result = checkpoint_manager.rebuild_index()
    assert (result.indexed, result.corrupted) == (2, ())
    assert [row.to_dict() for row in Checkpoint.objects.all()] == before
    assert sorted(ids, reverse=True) == [row.pk for row in Checkpoint.objects.all()]


def test_blob_is_fsynced_before_its_row_is_inserted(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    rows_at_fsync: list[int] = []

    def fsync(fd: int) -> None:
        rows_at_fsync.append(Checkpoint.objects.count())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    checkpoint_id = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    # New directories' parents (first save), the file, then its directory: all before the row.
    assert len(rows_at_fsync) >= 2
    assert set(rows_at_fsync) == {0}
    assert Checkpoint.objects.filter(pk=checkpoint_id).exists()
    assert [p.name for p in (media / "checkpoints").iterdir()] == [f"{checkpoint_id}.ckpt"]


def test_the_latest_checkpoint_is_the_last_saved_even_if_its_clock_is_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilience.checkpoint import _ids

    manager = StateCheckpointManager(store=DjangoCheckpointStore(), clock=lambda: 2_000_000_000.0)
    older = manager.save_checkpoint({"v": 1}, "skew", "w")
    monkeypatch.setattr(_ids, "_last_tick", 0)  # another host, its clock an hour behind
    behind = StateCheckpointManager(store=DjangoCheckpointStore(), clock=lambda: 1_999_996_400.0)
    newer = behind.save_checkpoint({"v": 2}, "skew", "w")
    assert newer < older
    assert manager.get_latest_checkpoint("skew", "w") == newer
    assert manager.cleanup(keep_last=1, dry_run=True).checkpoint_ids == (older,)
    behind.save_checkpoint({"v": 2}, "skew", "w")  # a re-save keeps rows' places
    manager.store.add_record(manager.store.get_record(older))  # type: ignore[arg-type]
    assert manager.list_checkpoints("skew", "w")[-1]["checkpoint_id"] == older


def test_re_adding_a_record_updates_its_fields_and_keeps_its_place() -> None:
    first = save_at(1_900_000_000.25, workflow="upsert")
    second = save_at(1_900_000_001.5, workflow="upsert")
    index = DjangoCheckpointStore().index
    record = index.get_record(first)
    assert record is not None
    seq = Checkpoint.objects.get(pk=first).seq
    changed = dataclasses.replace(record, metadata={"note": "é", "n": [1, {"x": None}]})
    index.add_record(changed)
    row = Checkpoint.objects.get(pk=first)
    assert row.seq == seq < Checkpoint.objects.get(pk=second).seq
    assert index.get_record(first) == changed  # every column round-trips
    assert row.created_at == datetime.fromtimestamp(1_900_000_000.25, tz=UTC)
    assert Checkpoint.objects.filter(workflow_id="upsert").count() == 2


def test_a_record_added_in_a_transaction_that_rolls_back_is_gone() -> None:
    record = DjangoCheckpointStore().index.get_record(save_at(1_900_000_000.0, workflow="rb"))
    assert record is not None
    Checkpoint.objects.filter(pk=record.checkpoint_id).delete()
    with pytest.raises(RuntimeError), transaction.atomic():
        DjangoCheckpointStore().index.add_record(record)
        assert Checkpoint.objects.filter(pk=record.checkpoint_id).exists()
        raise RuntimeError("roll back")
    assert not Checkpoint.objects.filter(pk=record.checkpoint_id).exists()


@pytest.mark.parametrize("outer_transaction", [False, True])
def test_a_sequence_number_taken_meanwhile_is_retried(
    monkeypatch: pytest.MonkeyPatch, outer_transaction: bool
) -> None:
    # Another process inserting between our max(seq) and our insert: simulated by a
    # first statement that picks max(seq) itself, which the unique index refuses.
    taken = save_at(1_900_000_000.0, workflow="race")
    record = DjangoCheckpointStore().index.get_record(save_at(1_900_000_001.0, workflow="race"))
    assert record is not None
    Checkpoint.objects.filter(pk=record.checkpoint_id).delete()
    real = store._upsert_sql
    calls: list[int] = []

    def stale(connection: Any) -> str:
        calls.append(1)
        sql = real(connection)
        return sql.replace(") + 1 ", ") ") if len(calls) == 1 else sql

    monkeypatch.setattr(store, "_upsert_sql", stale)
    index = DjangoCheckpointStore().index
    if outer_transaction:
        with transaction.atomic():
            index.add_record(record)
            index.add_record(record)  # the outer transaction is still usable
            index.add_record(record)
    else:
        index.add_record(record)
    assert len(calls) >= 2  # refused once, then done
    assert Checkpoint.objects.get(pk=record.checkpoint_id).seq == (
        Checkpoint.objects.get(pk=taken).seq + 1
    )


def test_latest_follows_the_save_order_of_every_writer_and_deletions() -> None:
    # Another process's store (its own instance) and a clock that stepped back: the
    # latest is the last saved, at once, and after its deletion the one before it.
    now = time.time()
    first = save_at(now, "a", "w", {"n": 1})
    assert checkpoint_manager.get_latest_checkpoint("a", "w") == first
    second = save_at(now - 60, "a", "w", {"n": 2})
    save_at(now + 5, "a", "other", {"n": 3})
    assert checkpoint_manager.get_latest_checkpoint("a", "w") == second
    assert checkpoint_manager.get_checkpoint_info(second)["created_at"] == now - 60
    [record] = store.get_store().query_records(agent_id="a", workflow_id="w", limit=1)
    assert (record.checkpoint_id, record.metadata, record.created_at) == (second, {}, now - 60)
    Checkpoint.objects.filter(pk=second).delete()
    assert checkpoint_manager.get_latest_checkpoint("a", "w") == first
    Checkpoint.objects.filter(pk=first).update(seq=None)  # a row from before seq existed
    third = save_at(now - 120, "a", "w", {"n": 4})
    assert [c["checkpoint_id"] for c in checkpoint_manager.list_checkpoints("a", "w")] == [
        third,
        first,
    ]
    assert checkpoint_manager.load_checkpoint(third) == {"n": 4}


def test_blobs_follow_a_new_media_root_and_a_removed_folder_is_made_again(
    settings: Any, media: Path, tmp_path: Path
) -> None:
    import shutil

    first = checkpoint_manager.save_checkpoint({"n": 1}, "a", "w")
    assert blob_path(media, first).is_file()
    shutil.rmtree(media / "checkpoints")  # by hand, between two saves
    second = checkpoint_manager.save_checkpoint({"n": 2}, "a", "w")
    assert blob_path(media, second).is_file()
    settings.MEDIA_ROOT = tmp_path / "elsewhere"
    third = checkpoint_manager.save_checkpoint({"n": 3}, "a", "w")
    assert blob_path(tmp_path / "elsewhere", third).is_file()
    assert not blob_path(media, third).exists()
    assert checkpoint_manager.load_checkpoint(third) == {"n": 3}
