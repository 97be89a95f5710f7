from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from dashboard.checkpoints import store
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore
from resilience.checkpoint import (
    StateCheckpointManager,
    checkpoint_manager,
    set_default_checkpoint_manager,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:checkpoints_checkpoint_changelist"
CLEANUP = "admin:checkpoints_checkpoint_cleanup"
DAY = 86400.0


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Blobs go to a temporary MEDIA_ROOT; the Django manager is the default."""
    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[[], Any]:
    """Run on_commit callbacks (blob deletions) of the block, as a real commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def blob_path(media: Path, checkpoint_id: str) -> Path:
    return media / "checkpoints" / f"{checkpoint_id}.ckpt"


def save_at(when: float, agent: str = "a", workflow: str = "w") -> str:
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=lambda: when
    )
    return manager.save_checkpoint({"at": when}, agent, workflow)


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def run_action(client: Client, action: str, ids: list[str], **extra: str) -> Any:
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": ids, **extra}, follow=False
    )


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def change_url(checkpoint_id: str) -> str:
    # As the admin's own links do: its URLs escape "_" (an id's "_22" would read as '"').
    return reverse("admin:checkpoints_checkpoint_change", args=[quote(checkpoint_id)])


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (response.status_code, response.get("Location"))
    return response.content.decode()


def test_changelist_shows_sizes_ratio_and_filters(admin_client: Client) -> None:
    a = checkpoint_manager.save_checkpoint({"text": "x" * 5000}, "alpha", "wf1")
    b = checkpoint_manager.save_checkpoint({"n": 1}, "beta", "wf2")
    body = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert a in body and b in body
    assert "4.9\xa0KB" in body  # raw size of a, human-readable
    ratio = Checkpoint.objects.get(pk=a).ratio
    assert f"{ratio:.2f}×" in body

    body = admin_client.get(reverse(CHANGELIST), {"agent_id": "beta"}).content.decode()
    assert b in body and a not in body
    body = admin_client.get(reverse(CHANGELIST), {"q": "wf1"}).content.decode()
    assert a in body and b not in body
    body = admin_client.get(reverse(CHANGELIST), {"codec__exact": "zstd"}).content.decode()
    assert a in body and b in body


def test_add_and_change_are_forbidden(admin_client: Client) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"n": 1}, "a", "w")
    assert admin_client.get(reverse("admin:checkpoints_checkpoint_add")).status_code == 403
    change = change_url(checkpoint_id)
    assert admin_client.post(change, {"agent_id": "evil"}).status_code == 403
    assert Checkpoint.objects.get(pk=checkpoint_id).agent_id == "a"


def test_detail_page_shows_pretty_escaped_state(admin_client: Client) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint(
        {"note": "<script>alert(1)</script>", "items": [1, 2]}, "a", "w", {"run": 5}
    )
    change = change_url(checkpoint_id)
    body = page(admin_client, change)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert "  &quot;items&quot;: [\n    1,\n    2\n  ]" in body  # indented JSON
    assert "&quot;run&quot;: 5" in body
    assert "Truncated" not in body


def test_detail_page_truncates_big_states_and_says_so(admin_client: Client) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint(
        {"rows": [f"row {i:06d}" for i in range(30_000)]}, "a", "w"
    )
    change = change_url(checkpoint_id)
    body = page(admin_client, change)
    assert "Truncated" in body
    assert "showing the first 200,000 of" in body
    assert "row 000001" in body
    assert "row 029999" not in body


def test_detail_page_of_a_corrupted_blob_shows_corrupted_not_content(
    admin_client: Client, media: Path
) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"secret": "visible-marker"}, "a", "w")
    flip_last_byte(blob_path(media, checkpoint_id))
    change = change_url(checkpoint_id)
    body = admin_client.get(change).content.decode()
    assert "<strong>corrupted</strong>" in body
    assert "visible-marker" not in body


def test_admin_single_delete_removes_row_blob_and_logs(
    admin_client: Client, admin_user: User, media: Path, commit: Callable[[], Any]
) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"n": 1}, "a", "w")
    delete = reverse("admin:checkpoints_checkpoint_delete", args=[checkpoint_id])
    assert admin_client.get(delete).status_code == 200
    with commit():
        response = admin_client.post(delete, {"post": "yes"})
    assert response.status_code == 302
    assert not Checkpoint.objects.filter(pk=checkpoint_id).exists()
    assert not blob_path(media, checkpoint_id).exists()
    entry = LogEntry.objects.get(object_id=checkpoint_id)
    assert (entry.action_flag, entry.user_id) == (DELETION, admin_user.pk)


def test_admin_bulk_delete_action_removes_rows_blobs_and_logs(
    admin_client: Client, media: Path, commit: Callable[[], Any]
) -> None:
    ids = [checkpoint_manager.save_checkpoint({"i": i}, "a", "w") for i in range(3)]
    with commit():
        response = run_action(admin_client, "delete_selected", ids[:2], post="yes")
    assert response.status_code == 302
    assert list(Checkpoint.objects.values_list("pk", flat=True)) == ids[2:]
    assert [blob_path(media, i).exists() for i in ids] == [False, False, True]
    assert set(
        LogEntry.objects.filter(action_flag=DELETION).values_list("object_id", flat=True)
    ) == set(ids[:2])


def test_verify_action_reports_ok_and_corrupted_by_id(admin_client: Client, media: Path) -> None:
    good = checkpoint_manager.save_checkpoint({"n": 1}, "a", "w")
    bad = checkpoint_manager.save_checkpoint({"n": 2}, "a", "w")
    flip_last_byte(blob_path(media, bad))
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "verify_integrity", "_selected_action": [good, bad]},
        follow=True,
    )
    texts = messages_of(response)
    assert f"corrupted: {bad}" in texts
    assert f"ok (1): {good}" in texts


def test_download_action_returns_the_decoded_state(admin_client: Client) -> None:
    state = {"messages": ["a", "b"], "step": 4}
    one = checkpoint_manager.save_checkpoint(state, "a", "w")
    two = checkpoint_manager.save_checkpoint({"other": True}, "a", "w")

    response = run_action(admin_client, "download_state", [one])
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="{one}.json"'
    assert json.loads(response.content) == state

    response = run_action(admin_client, "download_state", [one, two])
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == sorted([f"{one}.json", f"{two}.json"])
        assert json.loads(archive.read(f"{two}.json")) == {"other": True}


def test_download_of_a_corrupted_checkpoint_is_refused(admin_client: Client, media: Path) -> None:
    bad = checkpoint_manager.save_checkpoint({"n": 2}, "a", "w")
    flip_last_byte(blob_path(media, bad))
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "download_state", "_selected_action": [bad]},
        follow=True,
    )
    assert response["Content-Type"].startswith("text/html")
    assert f"Nothing downloaded: corrupted or missing: {bad}" in messages_of(response)


def test_cleanup_page_previews_then_removes_exactly_the_previewed_ids(
    admin_client: Client, admin_user: User, media: Path, commit: Callable[[], Any]
) -> None:
    now = time.time()
    old = [save_at(now - d * DAY) for d in (30, 20, 10)]
    keep = save_at(now - 60)
    url = reverse(CLEANUP)
    assert 'name="keep_last"' in admin_client.get(url).content.decode()

    response = admin_client.post(url, {"keep_last": "2", "older_than": "7d", "preview": "1"})
    body = response.content.decode()
    assert "Would remove <strong>2</strong>" in body
    stored = sum(Checkpoint.objects.get(pk=i).stored_size for i in old[:2])
    assert f"<strong>{stored}\xa0bytes</strong>" in body
    assert old[0] in body and old[1] in body and keep not in body
    assert 'name="csrfmiddlewaretoken"' in body
    assert Checkpoint.objects.count() == 4  # a preview removes nothing
    plan = re.search(r'name="plan" value="([^"]+)"', body)
    assert plan is not None

    newer = save_at(now - 5 * DAY)  # pushes old[2] out of "last 2", after the preview
    with commit():
        response = admin_client.post(
            url,
            {
                "keep_last": "2",
                "older_than": "7d",
                "reason": "disk",
                "plan": plan.group(1),
                "confirm": "1",
            },
            follow=True,
        )
    remaining = set(Checkpoint.objects.values_list("pk", flat=True))
    assert remaining == {old[2], keep, newer}
    assert [blob_path(media, i).exists() for i in old] == [False, False, True]
    logged = LogEntry.objects.filter(action_flag=DELETION, user=admin_user)
    assert set(logged.values_list("object_id", flat=True)) == set(old[:2])
    assert "disk" in logged.first().change_message  # type: ignore[union-attr]
    assert any(text.startswith("Removed 2 checkpoints") for text in messages_of(response))


def test_cleanup_confirm_with_a_tampered_plan_removes_nothing(admin_client: Client) -> None:
    save_at(time.time() - 31 * DAY)
    save_at(time.time() - 30 * DAY)  # the latest of its group: never removed
    response = admin_client.post(
        reverse(CLEANUP), {"older_than": "7d", "plan": "forged:token", "confirm": "1"}
    )
    assert Checkpoint.objects.count() == 2
    assert "Would remove <strong>1</strong>" in response.content.decode()


def test_cleanup_form_rejects_bad_values(admin_client: Client) -> None:
    url = reverse(CLEANUP)
    body = admin_client.post(url, {"older_than": "7 parsecs", "preview": "1"}).content.decode()
    assert "is not a duration" in body
    body = admin_client.post(url, {"preview": "1"}).content.decode()
    assert "Give keep last N, older than, or both." in body
    body = admin_client.post(url, {"keep_last": "0", "preview": "1"}).content.decode()
    assert "greater than or equal to 1" in body


def test_viewer_without_delete_permission_cannot_delete_or_clean_up(client: Client) -> None:
    checkpoint_id = checkpoint_manager.save_checkpoint({"n": 1}, "a", "w")
    viewer = User.objects.create_user("viewer", password="pw-for-tests-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_checkpoint"))
    client.force_login(viewer)
    assert client.get(reverse(CHANGELIST)).status_code == 200
    assert client.get(reverse(CLEANUP)).status_code == 403
    delete = reverse("admin:checkpoints_checkpoint_delete", args=[checkpoint_id])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    run_action(client, "delete_selected", [checkpoint_id], post="yes")
    assert Checkpoint.objects.filter(pk=checkpoint_id).exists()
