"""Checkpoint endpoints: list (filters, pages), metadata, delete and cleanup (audited)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from dashboard.api import testing, throttle
from dashboard.checkpoints import store
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import DjangoCheckpointStore
from dashboard.models import AuditEntry
from resilience.checkpoint import StateCheckpointManager

BASE = "/api/observability/checkpoints"
DAY = 86400.0
pytestmark = pytest.mark.django_db(transaction=True)  # blobs go when deletions commit


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    throttle.reset()
    settings.MEDIA_ROOT = tmp_path / "media"
    yield tmp_path / "media"


@pytest.fixture
def viewer() -> dict[str, str]:
    return testing.bearer(testing.token_for(testing.make_user("vera", "dashboard.view_dashboard")))


@pytest.fixture
def janitor() -> dict[str, str]:
    user = testing.make_user("jan", "dashboard.view_dashboard", "checkpoints.delete_checkpoint")
    return testing.bearer(testing.token_for(user))


def save(agent: str = "a", workflow: str = "w", days_ago: float = 0.0, **state: Any) -> str:
    when = time.time() - days_ago * DAY
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(), signing_key=store.signing_key(), clock=lambda: when
    )
    return manager.save_checkpoint(
        state=state or {"step": 1}, agent_id=agent, workflow_id=workflow, metadata={"k": "v"}
    )


def test_list_filters_and_paginates_newest_first(client: Client, viewer: dict[str, str]) -> None:
    a1, a2 = save("a", "w1", days_ago=2), save("a", "w2", days_ago=1)
    b1 = save("b", "w1")
    body = client.get(BASE, **viewer).json()
    assert [item["checkpoint_id"] for item in body["items"]] == [b1, a2, a1]
    assert (body["total"], body["has_next"]) == (3, False)
    only_a = client.get(BASE, {"agent_id": "a"}, **viewer).json()
    assert [item["checkpoint_id"] for item in only_a["items"]] == [a2, a1]
    w1 = client.get(BASE, {"workflow_id": "w1"}, **viewer).json()
    assert [item["checkpoint_id"] for item in w1["items"]] == [b1, a1]
    both = client.get(BASE, {"agent_id": "a", "workflow_id": "w1"}, **viewer).json()
    assert [item["checkpoint_id"] for item in both["items"]] == [a1]
    page2 = client.get(BASE, {"page_size": 2, "page": 2}, **viewer).json()
    assert ([item["checkpoint_id"] for item in page2["items"]], page2["total"]) == ([a1], 3)


def test_metadata_of_one_checkpoint(client: Client, viewer: dict[str, str]) -> None:
    checkpoint_id = save(step=3)
    body = client.get(f"{BASE}/{checkpoint_id}", **viewer).json()
    row = Checkpoint.objects.get()
    assert body["checkpoint_id"] == checkpoint_id
    assert (body["agent_id"], body["workflow_id"], body["metadata"]) == ("a", "w", {"k": "v"})
    assert (body["raw_size"], body["stored_size"], body["sha256"]) == (
        row.raw_size,
        row.stored_size,
        row.sha256,
    )
    assert body["codec"] == row.codec


def test_unknown_checkpoint_is_404_and_malformed_id_422(
    client: Client, viewer: dict[str, str]
) -> None:
    assert client.get(f"{BASE}/ck_00000000000000_000000000000", **viewer).status_code == 404
    response = client.get(f"{BASE}/not-an-id", **viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "checkpoint_id"]


def test_delete_removes_row_and_blob_and_is_audited(
    client: Client, janitor: dict[str, str], media: Path
) -> None:
    checkpoint_id = save()
    blob = media / "checkpoints" / f"{checkpoint_id}.ckpt"
    assert blob.exists()
    response = client.delete(f"{BASE}/{checkpoint_id}?reason=obsolete", **janitor)
    assert response.status_code == 200
    assert response.json() == {"checkpoint_id": checkpoint_id, "deleted": True}
    assert not Checkpoint.objects.exists() and not blob.exists()
    entry = AuditEntry.objects.get(action="checkpoint.delete")
    assert (entry.actor, entry.source, entry.target, entry.reason) == (
        "jan",
        "api",
        checkpoint_id,
        "obsolete",
    )
    assert client.delete(f"{BASE}/{checkpoint_id}", **janitor).status_code == 404


def test_delete_needs_the_delete_permission(client: Client, viewer: dict[str, str]) -> None:
    checkpoint_id = save()
    response = client.delete(f"{BASE}/{checkpoint_id}", **viewer)
    assert response.status_code == 403
    assert "checkpoints.delete_checkpoint" in response.json()["detail"]
    assert Checkpoint.objects.exists()


def test_cleanup_keeps_the_newest_per_group_and_reports(
    client: Client, janitor: dict[str, str]
) -> None:
    old = save("a", "w", days_ago=3)
    older = save("a", "w", days_ago=4)
    newest = save("a", "w", days_ago=1)
    other = save("b", "w", days_ago=9)
    sizes = dict(Checkpoint.objects.values_list("checkpoint_id", "stored_size"))
    response = client.post(
        f"{BASE}/cleanup",
        {"keep_last": 1, "reason": "tidy"},
        content_type="application/json",
        **janitor,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body["checkpoint_ids"]) == {old, older}
    assert (body["count"], body["dry_run"]) == (2, False)
    assert body["stored_bytes"] == sizes[old] + sizes[older]
    assert set(Checkpoint.objects.values_list("pk", flat=True)) == {newest, other}
    entry = AuditEntry.objects.get(action="checkpoint.cleanup")
    assert (entry.actor, entry.reason) == ("jan", "tidy")


def test_cleanup_dry_run_and_older_than_change_nothing_and_audit_nothing(
    client: Client, janitor: dict[str, str]
) -> None:
    old = save(days_ago=10)
    save(days_ago=1)
    response = client.post(
        f"{BASE}/cleanup",
        {"older_than": 5 * DAY, "dry_run": True},
        content_type="application/json",
        **janitor,
    )
    assert response.json()["checkpoint_ids"] == [old]
    assert Checkpoint.objects.count() == 2
    assert not AuditEntry.objects.filter(action="checkpoint.cleanup").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"keep_last": -1}, "keep_last"),
        ({"keep_last": 0}, "keep_last"),
        ({"older_than": -5}, "older_than"),
        ({"keep_last": "many"}, "keep_last"),
        ({}, "keep_last"),
        ({"dry_run": True}, "keep_last"),
    ],
)
def test_invalid_cleanup_is_422_naming_the_field(
    client: Client, janitor: dict[str, str], payload: dict[str, Any], field: str
) -> None:
    save(days_ago=3)
    save(days_ago=1)
    response = client.post(f"{BASE}/cleanup", payload, content_type="application/json", **janitor)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field
    assert Checkpoint.objects.count() == 2


def test_cleanup_needs_the_delete_permission(client: Client, viewer: dict[str, str]) -> None:
    save(days_ago=3)
    save(days_ago=1)
    response = client.post(
        f"{BASE}/cleanup", {"keep_last": 1}, content_type="application/json", **viewer
    )
    assert response.status_code == 403
    assert Checkpoint.objects.count() == 2


def test_checkpoints_need_authentication(client: Client) -> None:
    assert client.get(BASE).status_code == 401
    assert client.post(f"{BASE}/cleanup").status_code == 401
