from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from dashboard.checkpoints import store
from dashboard.checkpoints.forms import parse_duration
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore, blobs_handled
from dashboard.durations import format_duration
from dashboard.models import AuditEntry
from resilience.checkpoint import (
    StateCheckpointManager,
    checkpoint_manager,
    set_default_checkpoint_manager,
)

pytestmark = pytest.mark.django_db

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


def save_at(when: float, agent: str = "a", workflow: str = "w") -> str:
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=lambda: when
    )
    return manager.save_checkpoint({"at": when}, agent, workflow)


def make_old(path: Path) -> None:
    old = time.time() - 2 * DAY
    os.utime(path, (old, old))


@pytest.fixture
def run(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., str]:
    """``manage.py checkpoints ARGS``; on_commit callbacks run as after a real commit."""

    def run(*args: str) -> str:
        out = io.StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("checkpoints", *args, stdout=out)
        return out.getvalue()

    return run


def test_verify_prints_ok_per_id_and_exits_zero(run: Callable[..., str]) -> None:
    ids = [checkpoint_manager.save_checkpoint({"i": i}, "a", "w") for i in range(2)]
    out = run("verify")
    assert f"ok         {ids[0]}" in out and f"ok         {ids[1]}" in out
    assert "2 checked: 2 ok, 0 corrupted, 0 missing blob" in out


def test_verify_fails_with_exit_code_1_on_a_flipped_byte(
    media: Path, run: Callable[..., str]
) -> None:
    good = checkpoint_manager.save_checkpoint({"i": 1}, "a", "w")
    bad = checkpoint_manager.save_checkpoint({"i": 2}, "a", "w")
    path = blob_path(media, bad)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 corrupted") as excinfo:
        call_command("checkpoints", "verify", stdout=out)
    assert excinfo.value.returncode == 1
    assert f"CORRUPTED  {bad}" in out.getvalue()
    assert f"ok         {good}" in out.getvalue()

    assert f"{good}" in run("verify", good)  # only the given id: passes


def test_verify_reports_a_missing_blob_and_rejects_malformed_ids(media: Path) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"i": 1}, "a", "w")
    blob_path(media, checkpoint_id).unlink()
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("checkpoints", "verify", stdout=out)
    assert f"MISSING    {checkpoint_id}" in out.getvalue()
    with pytest.raises(CommandError, match="not a checkpoint id"):
        call_command("checkpoints", "verify", "../etc/passwd")


def test_cleanup_dry_run_reports_and_real_run_removes(media: Path, run: Callable[..., str]) -> None:
    now = time.time()
    old = save_at(now - 10 * DAY)
    recent = save_at(now - 60)

    out = run("cleanup", "--older-than", "7d", "--dry-run")
    assert "Would remove 1 checkpoint," in out and old in out
    assert Checkpoint.objects.count() == 2 and blob_path(media, old).exists()

    out = run("cleanup", "--older-than", "7d", "--reason", "nightly")
    assert "Removed 1 checkpoint," in out and "older than 7d" in out
    assert list(Checkpoint.objects.values_list("pk", flat=True)) == [recent]
    assert not blob_path(media, old).exists()
    entry = AuditEntry.objects.get(action="checkpoint.cleanup")
    assert (entry.source, entry.reason) == ("command", "nightly")


def test_cleanup_keep_last_keeps_newest_per_group(run: Callable[..., str]) -> None:
    now = time.time()
    a = [save_at(now - d, "a", "w") for d in (300, 200, 100)]
    b = save_at(now - 400, "b", "w")
    run("cleanup", "--keep-last", "1")
    assert set(Checkpoint.objects.values_list("pk", flat=True)) == {a[2], b}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cleanup",), "--keep-last N and/or --older-than"),
        (("cleanup", "--older-than", "7x"), "is not a duration"),
        (("cleanup", "--older-than=-1d"), "is not a duration"),
        (("cleanup", "--keep-last", "0"), "must be >= 1"),
        (("cleanup", "--keep-last", "two"), "not a whole number"),
    ],
)
def test_cleanup_rejects_bad_values_clearly(
    args: tuple[str, ...], message: str, settings: Any
) -> None:
    settings.CHECKPOINT_KEEP_LAST, settings.CHECKPOINT_MAX_AGE = 0, ""  # no policy either
    with pytest.raises(CommandError, match=message):
        call_command("checkpoints", *args)


def test_durations_accept_units_and_plain_seconds() -> None:
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert format_duration(timedelta(days=7)) == "7d"
    assert format_duration(timedelta(hours=36)) == "36h"
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999d")


def test_orphans_finds_and_deletes_both_kinds(media: Path, run: Callable[..., str]) -> None:
    now = time.time()
    kept = save_at(now - 2 * DAY)
    lonely_blob = save_at(now - 2 * DAY)
    with blobs_handled():  # drop the row only
        Checkpoint.objects.filter(pk=lonely_blob).delete()
    make_old(blob_path(media, lonely_blob))
    lonely_row = save_at(now - 2 * DAY)
    blob_path(media, lonely_row).unlink()
    fresh_blob = checkpoint_manager.save_checkpoint({"x": 1}, "a", "w")
    with blobs_handled():
        Checkpoint.objects.filter(pk=fresh_blob).delete()

    out = run("orphans")
    assert "Blobs without rows: 1" in out and f"blob {lonely_blob}" in out
    assert "Rows without blobs: 1" in out and f"row  {lonely_row}" in out
    assert fresh_blob not in out  # within the grace period: its row may be on the way
    assert blob_path(media, lonely_blob).exists()

    out = run("orphans", "--delete")
    assert "Deleted 1 orphan blob and 1 row without blobs." in out
    assert not blob_path(media, lonely_blob).exists()
    assert list(Checkpoint.objects.values_list("pk", flat=True)) == [kept]
    assert blob_path(media, kept).exists() and blob_path(media, fresh_blob).exists()

    out = run("orphans", "--grace", "0", "--delete")
    assert f"blob {fresh_blob}" in out
    assert not blob_path(media, fresh_blob).exists()
