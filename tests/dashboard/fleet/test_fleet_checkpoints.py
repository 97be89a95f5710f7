"""A plain-Python worker's checkpoints: metadata over the fleet connection, blobs shared.

The worker's side is the real :class:`resilience.fleet.checkpoints.CheckpointForwarder`
over a real ``StateCheckpointManager`` writing into the dashboard's MEDIA_ROOT; its
transport posts with Django's test client, so both halves are tested together.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.api import testing
from dashboard.checkpoints import store
from dashboard.checkpoints.models import Checkpoint
from resilience.checkpoint import StateCheckpointManager
from resilience.events import EventBus
from resilience.fleet import TransportError, instance_info
from resilience.fleet.checkpoints import CHECKPOINTS_PATH, CheckpointForwarder

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:checkpoints_checkpoint_changelist"


class ClientTransport:
    def __init__(self, client: Client, token: str) -> None:
        self.client, self.token = client, token

    def send(self, body: bytes) -> dict[str, Any]:
        response = self.client.post(
            CHECKPOINTS_PATH, body, content_type="application/json", **testing.bearer(self.token)
        )
        if response.status_code != 200:
            raise TransportError(f"{response.status_code}: {response.content[:300]!r}")
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return tmp_path / "media"


@pytest.fixture
def token() -> str:
    return testing.token_for(testing.make_user("worker", "fleet.report_fleet"))


@pytest.fixture
def worker(media: Path, token: str) -> Iterator[tuple[StateCheckpointManager, CheckpointForwarder]]:
    # The worker shares the dashboard's storage folder and signing key, nothing else.
    manager = StateCheckpointManager(media / "checkpoints", signing_key=store.signing_key())
    forwarder = CheckpointForwarder(
        manager,
        transport=ClientTransport(Client(), token),
        instance=instance_info(service="planner"),
        event_bus=manager_bus,
    )
    yield manager, forwarder
    forwarder.stop(0)
    manager.close()


manager_bus = EventBus()


@pytest.fixture(autouse=True)
def _bus(monkeypatch: pytest.MonkeyPatch) -> None:
    # The manager publishes on the process bus; route it to the test's private bus.
    import resilience.checkpoint.manager as manager_module

    monkeypatch.setattr(manager_module, "bus", manager_bus, raising=False)


def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw-123456789"))
    return client


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_a_plain_worker_checkpoint_is_listed_verified_downloaded_and_deleted(
    worker: tuple[StateCheckpointManager, CheckpointForwarder], media: Path
) -> None:
    manager, forwarder = worker
    checkpoint_id = manager.save_checkpoint({"step": 3}, "agent-1", "wf-1", {"k": "v"})
    assert forwarder.pending == 1
    assert forwarder.send_once()
    row = Checkpoint.objects.get()
    assert (row.checkpoint_id, row.agent_id, row.metadata) == (checkpoint_id, "agent-1", {"k": "v"})
    assert row.storage_path == f"checkpoints/{checkpoint_id}.ckpt"

    client = admin_client()
    listing = client.get(reverse(CHANGELIST) + "?agent_id=agent-1").content.decode()
    assert checkpoint_id in listing
    verified = client.post(
        reverse(CHANGELIST),
        {"action": "verify_integrity", "_selected_action": [checkpoint_id]},
        follow=True,
    )
    assert messages_of(verified) == [f"ok (1): {checkpoint_id}"]
    download = client.post(
        reverse(CHANGELIST), {"action": "download_state", "_selected_action": [checkpoint_id]}
    )
    assert json.loads(
        b"".join(download.streaming_content if download.streaming else [download.content])
    ) == {"step": 3}  # noqa: E501
    deleted = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [checkpoint_id], "post": "yes"},
        follow=True,
    )
    assert deleted.status_code == 200
    assert not Checkpoint.objects.exists()


def test_an_unreadable_blob_is_reported_in_the_admin_not_a_500(
    worker: tuple[StateCheckpointManager, CheckpointForwarder], media: Path
) -> None:
    manager, forwarder = worker
    checkpoint_id = manager.save_checkpoint({"step": 1}, "agent-1", "wf-1")
    forwarder.send_once()
    (media / "checkpoints" / f"{checkpoint_id}.ckpt").unlink()
    client = admin_client()
    verified = client.post(
        reverse(CHANGELIST),
        {"action": "verify_integrity", "_selected_action": [checkpoint_id]},
        follow=True,
    )
    assert verified.status_code == 200
    assert messages_of(verified) == [f"corrupted (blob missing): {checkpoint_id}"]


def test_metadata_waits_while_the_dashboard_refuses_and_goes_later(
    worker: tuple[StateCheckpointManager, CheckpointForwarder],
) -> None:
    manager, forwarder = worker

    class Down:
        def send(self, body: bytes) -> dict[str, Any]:
            raise TransportError("down")

    working, forwarder.transport = forwarder.transport, Down()
    manager.save_checkpoint({"step": 1}, "agent-1", "wf-1")
    assert not forwarder.send_once()
    assert (forwarder.pending, forwarder.failed) == (1, 1)
    forwarder.transport = working
    assert forwarder.send_once() and forwarder.pending == 0
    assert Checkpoint.objects.count() == 1


def item(**changes: Any) -> dict[str, Any]:
    checkpoint_id = "ck_0123456789abcd_0123456789ab"
    values: dict[str, Any] = {
        "checkpoint_id": checkpoint_id,
        "agent_id": "a",
        "workflow_id": "w",
        "created_at": 1_700_000_000.0,
        "raw_size": 10,
        "stored_size": 8,
        "sha256": "0" * 64,
        "codec": "zstd",
        "metadata": {},
        "blob": checkpoint_id + ".ckpt",
    }
    values.update(changes)
    return values


def post(client: Client, token: str, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        CHECKPOINTS_PATH, raw, content_type="application/json", **testing.bearer(token)
    )


def message(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "protocol": 1,
        "type": "checkpoints",
        "instance": {**instance_info(service="x"), "id": "i-1"},
        "checkpoints": list(items),
    }


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"blob": "../../etc/passwd"}, "blob must be"),
        ({"blob": "/abs/ck_0123456789abcd_0123456789ab.ckpt"}, "blob"),
        ({"blob": "ck_0123456789abcd_0123456789ab.ckpt/../x"}, "blob"),
        ({"codec": "lz4"}, "codec"),
        ({"checkpoint_id": "../ck"}, "checkpoint_id"),
        ({"agent_id": "../a"}, "agent_id"),
        ({"agent_id": "a" * 5000}, "agent_id"),
        ({"metadata": {"big": "x" * 20_000}}, "metadata must be at most"),
        ({"sha256": "z" * 64}, "sha256"),
        ({"raw_size": -1}, "raw_size"),
        ({"created_at": 1e300}, "created_at"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_hostile_checkpoint_messages_are_400_naming_the_field(
    client: Client, token: str, changes: dict[str, Any], named: str
) -> None:
    response = post(client, token, message(item(**changes)))
    assert response.status_code == 400, response.content
    assert named in response.json()["detail"]
    assert not Checkpoint.objects.exists()


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"protocol": 1, "type": "checkpoints", "x": NaN}', b"\x00", b"[" * 5000],
)
def test_malformed_bodies_are_400(client: Client, token: str, body: bytes) -> None:
    assert post(client, token, body).status_code == 400


def test_too_many_items_or_bytes_are_refused(client: Client, token: str, settings: Any) -> None:
    assert post(client, token, message(*[item()] * 101)).status_code == 400
    settings.FLEET_MAX_REPORT_BYTES = 100
    assert post(client, token, message(item())).status_code == 413


def test_an_existing_checkpoint_is_never_replaced(client: Client, token: str) -> None:
    assert post(client, token, message(item())).json()["recorded"] == [item()["checkpoint_id"]]
    again = post(client, token, message(item(agent_id="other")))
    assert again.json() == again.json() | {"recorded": [], "existing": [item()["checkpoint_id"]]}
    assert Checkpoint.objects.get().agent_id == "a"


def test_a_checkpoint_recorded_meanwhile_is_not_replaced(
    client: Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (the worker's own manager, a second post) records the id after
    this request looked for it and before it writes: the row that won stays."""
    from dashboard.fleet import checkpoints as endpoint
    from resilience.checkpoint import CheckpointRecord

    real = store.get_store()
    first = item(agent_id="first", sha256="1" * 64)
    theirs = CheckpointRecord(
        **{k: v for k, v in first.items() if k != "blob"}  # type: ignore[arg-type]
    )

    class Racing:
        def add_new_record(self, record: Any) -> bool:
            real.add_record(theirs)  # lands between the existence check and our write
            return real.add_new_record(record)

    monkeypatch.setattr(endpoint, "get_store", lambda: Racing())
    answer = post(client, token, message(item(agent_id="second"))).json()
    row = Checkpoint.objects.get()
    assert (row.agent_id, row.sha256) == ("first", "1" * 64)
    assert answer["recorded"] == [] and answer["existing"] == [item()["checkpoint_id"]]


def test_a_checkpoint_from_the_future_is_refused(client: Client, token: str) -> None:
    """A row dated years ahead would be its group's newest forever: retention's
    keep-last would delete the real checkpoints for it and its max age never comes."""
    import time

    ahead = item(created_at=time.time() + 365 * 86400)
    response = post(client, token, message(ahead))
    assert response.status_code == 400, response.content
    assert "created_at" in response.json()["detail"]
    assert not Checkpoint.objects.exists()
    skewed = item(created_at=time.time() + 60)  # a worker's clock a minute ahead is fine
    assert post(client, token, message(skewed)).status_code == 200


def test_checkpoint_endpoint_needs_a_reporter_token(client: Client) -> None:
    assert client.post(CHECKPOINTS_PATH, b"{}", content_type="application/json").status_code == 401
    viewer = testing.token_for(testing.make_user("v", "dashboard.view_dashboard"))
    assert post(client, viewer, message(item())).status_code == 403
    client.force_login(testing.make_user("s", "fleet.report_fleet"))
    assert client.post(CHECKPOINTS_PATH, b"{}", content_type="application/json").status_code == 403
    assert client.get(CHECKPOINTS_PATH).status_code == 405


def test_the_forwarders_message_matches_the_protocol_schema(media: Path) -> None:
    import jsonschema_rs

    from resilience import fleet

    sent: list[bytes] = []

    class Capture:
        def send(self, body: bytes) -> dict[str, Any]:
            sent.append(body)
            return {}

    manager = StateCheckpointManager(media / "checkpoints", signing_key=store.signing_key())
    forwarder = CheckpointForwarder(
        manager, transport=Capture(), instance=instance_info(service="s"), event_bus=manager_bus
    )
    try:
        manager.save_checkpoint({"x": 1}, "a", "w", {"m": [1, 2]})
        assert forwarder.send_once()
    finally:
        forwarder.stop(0)
        manager.close()
    schema = fleet.schema()
    (body,) = sent
    jsonschema_rs.validate(
        {"$defs": schema["$defs"], "$ref": "#/$defs/CheckpointsMessage"}, json.loads(body)
    )
    assert {"$ref": "#/$defs/CheckpointsMessage"} in schema["oneOf"]


def _json_values() -> Any:
    from hypothesis import strategies as st

    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )


def test_any_json_is_parsed_or_refused_with_a_value_error() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dashboard.fleet.checkpoints import parse_message

    fields = st.sampled_from(list(item()))

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(field=fields, value=_json_values(), top=_json_values())
    def check(field: str, value: Any, top: Any) -> None:
        for body in (message(item(**{field: value})), top):
            with contextlib.suppress(ValueError):  # anything else fails the test
                parse_message(json.dumps(body).encode())

    check()


@pytest.mark.parametrize(
    "metadata",
    [{"big": 10**30}, {"deep": [[[[[[[[[[1]]]]]]]]]]}, {"k" * 200: "v"}, {"float": 1e308}],
)
def test_odd_but_small_metadata_is_stored_or_refused_never_a_500(
    client: Client, token: str, metadata: dict[str, Any]
) -> None:
    response = post(client, token, message(item(metadata=metadata)))
    assert response.status_code in (200, 400), response.content


# -- ownership: a token writes only its own service's rows ------------------------------


def owned_message(service: str, *items: dict[str, Any], instance_id: str = "i-1") -> Any:
    return {**message(*items), "instance": {**instance_info(service=service), "id": instance_id}}


def refusals() -> list[Any]:
    from dashboard.audit import AuditEntry

    return list(AuditEntry.objects.filter(action="fleet.checkpoints.refused"))


def test_a_recorded_checkpoint_is_owned_by_the_token_user_and_service(
    client: Client, token: str
) -> None:
    from dashboard.fleet.models import FleetCheckpoint

    assert post(client, token, owned_message("planner", item())).status_code == 200
    owner = FleetCheckpoint.objects.get()
    assert (owner.checkpoint_id, owner.service, owner.instance_id, owner.user.username) == (
        item()["checkpoint_id"], "planner", "i-1", "worker"
    )  # fmt: skip
    # The same service (another instance, a restart) may add to its workflow and resend.
    second = item(checkpoint_id="ck_0123456789abce_0123456789ab",
                  blob="ck_0123456789abce_0123456789ab.ckpt")  # fmt: skip
    again = post(client, token, owned_message("planner", item(), second, instance_id="i-2"))
    assert again.status_code == 200
    assert again.json()["existing"] == [item()["checkpoint_id"]]
    assert again.json()["recorded"] == [second["checkpoint_id"]]


def test_another_services_workflow_is_refused_403_audited_and_nothing_recorded(
    client: Client, token: str
) -> None:
    assert post(client, token, owned_message("planner", item())).status_code == 200
    other = item(checkpoint_id="ck_0123456789abce_0123456789ab",
                 blob="ck_0123456789abce_0123456789ab.ckpt")  # fmt: skip
    fresh = item(checkpoint_id="ck_0123456789abcf_0123456789ab", workflow_id="mine",
                 blob="ck_0123456789abcf_0123456789ab.ckpt")  # fmt: skip
    refused = post(client, token, owned_message("tools", fresh, other))
    assert refused.status_code == 403
    assert "'w'" in refused.json()["detail"] and "another service" in refused.json()["detail"]
    assert Checkpoint.objects.count() == 1  # the whole message, "mine" included
    [entry] = refusals()
    assert (entry.actor, entry.source, entry.details["workflows"]) == (
        "worker",
        "fleet-http",
        ["w"],
    )


def test_another_token_user_of_the_same_service_is_refused(client: Client, token: str) -> None:
    assert post(client, token, owned_message("planner", item())).status_code == 200
    intruder = testing.token_for(testing.make_user("intruder", "fleet.report_fleet"))
    other = item(checkpoint_id="ck_0123456789abce_0123456789ab",
                 blob="ck_0123456789abce_0123456789ab.ckpt")  # fmt: skip
    assert post(client, intruder, owned_message("planner", other)).status_code == 403
    assert [e.actor for e in refusals()] == ["intruder"]


def test_overwriting_another_owners_checkpoint_id_is_refused(client: Client, token: str) -> None:
    """A crafted message reusing an id of another service's row, under a workflow name
    of its own: refused (never "existing", which would confirm nothing either)."""
    assert post(client, token, owned_message("planner", item())).status_code == 200
    crafted = item(workflow_id="fresh", agent_id="evil", sha256="f" * 64)
    refused = post(client, token, owned_message("tools", crafted))
    assert refused.status_code == 403 and "checkpoint ids" in refused.json()["detail"]
    row = Checkpoint.objects.get()
    assert (row.workflow_id, row.agent_id, row.sha256) == ("w", "a", "0" * 64)
    assert refusals()[0].details["checkpoints"] == [item()["checkpoint_id"]]


def test_a_workflow_the_dashboard_wrote_is_nobodys_to_add_to(
    client: Client, token: str, media: Path
) -> None:
    manager = store.build_manager()
    manager.save_checkpoint({"n": 1}, "agent", "server-side")
    refused = post(client, token, owned_message("planner", item(workflow_id="server-side")))
    assert refused.status_code == 403
    assert Checkpoint.objects.filter(workflow_id="server-side").count() == 1


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"workflow_id": "w/../other"}, 400),
        ({"workflow_id": "w" * 129}, 400),
        ({"checkpoint_id": "ck_0123456789abcd_0123456789ab\n"}, 400),
        ({"metadata": {"x": "y" * (1 << 20)}}, 413),
    ],
)
def test_crafted_ids_and_huge_bodies_never_reach_the_ownership_check(
    client: Client, token: str, changes: dict[str, Any], status: int
) -> None:
    assert post(client, token, owned_message("planner", item(**changes))).status_code == status
    assert not Checkpoint.objects.exists() and not refusals()


def test_the_forwarder_drops_a_refused_batch_and_counts_it(
    worker: tuple[StateCheckpointManager, CheckpointForwarder], token: str, media: Path
) -> None:
    manager, forwarder = worker
    forwarder.transport = RaisingTransport()
    forwarder._pending.append("ck_0123456789abcd_0123456789ab")
    assert forwarder.send_once() and forwarder.pending == 0
    assert (forwarder.refused, forwarder.failed) == (1, 0)


class RaisingTransport:
    def send(self, body: bytes) -> dict[str, Any]:
        raise TransportError("dashboard answered 403: not yours", status=403)


def test_a_failure_before_the_owner_is_written_leaves_no_row_and_the_retry_succeeds(
    client: Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row and its owner are one transaction: a row left without an owner would be
    nobody's, and every retry of its service refused."""
    from django.db import OperationalError

    from dashboard.fleet.models import FleetCheckpoint

    real = FleetCheckpoint.objects.update_or_create

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    monkeypatch.setattr(FleetCheckpoint.objects, "update_or_create", locked)
    with pytest.raises(OperationalError):
        post(client, token, owned_message("planner", item()))
    assert (Checkpoint.objects.count(), FleetCheckpoint.objects.count()) == (0, 0)
    monkeypatch.setattr(FleetCheckpoint.objects, "update_or_create", real)
    retry = post(client, token, owned_message("planner", item()))
    assert retry.status_code == 200, retry.json()
    assert FleetCheckpoint.objects.get().service == "planner"


def test_a_deleted_token_users_workflow_is_not_handed_to_a_redis_sender(
    client: Client, token: str
) -> None:
    """Deleting the token's user leaves its rows owned by (no user, service) over HTTP:
    a Redis sender declaring the same service is still another owner."""
    from dashboard.fleet import checkpoints

    assert post(client, token, owned_message("planner", item())).status_code == 200
    User.objects.filter(username="worker").delete()
    second = item(
        checkpoint_id="ck_0123456789abce_0123456789ab", blob="ck_0123456789abce_0123456789ab.ckpt"
    )
    parsed = checkpoints.parse_message(json.dumps(owned_message("planner", second)).encode())
    with pytest.raises(checkpoints.CheckpointsRefused):
        checkpoints.record_checkpoints(message=parsed, transport="redis")
    assert not Checkpoint.objects.filter(pk="ck_0123456789abce_0123456789ab").exists()
