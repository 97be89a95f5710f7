"""Checkpoint metadata reported by plain-Python workers (``resilience.fleet.checkpoints``).

``POST /api/fleet/v1/checkpoints`` takes a ``checkpoints`` message (protocol v1,
``protocol.schema.json#/$defs/CheckpointsMessage``) with a bearer token of a user with
``fleet.report_fleet``, and records one ``Checkpoint`` row per item. The blob is not
sent: the worker wrote it where the dashboard's checkpoint storage reads it
(``<CHECKPOINT_STORAGE_PREFIX>/<checkpoint_id>.ckpt``), so the admin verifies,
downloads and deletes it like any other; one it cannot read is shown as missing.

Hostile input is a 400 naming the field: the blob name must be exactly
``<checkpoint_id>.ckpt`` (the dashboard derives the storage path itself, so a name
with a path in it is refused, never followed), ids and names follow the checkpoint
patterns, the codec is one the dashboard decodes, metadata is at most
``MAX_METADATA_BYTES`` of JSON. A row that already exists is never replaced.

Ownership: each row recorded here is bound (``FleetCheckpoint``) to the token's user and
the reporting instance's service (and instance, for the record). A message may add to a
workflow only while every row of that workflow is owned by the same user and service:
a workflow of another service, or one the dashboard or a Django worker wrote, is
refused whole with 403 (nothing recorded) and audited (``fleet.checkpoints.refused``),
as is an id that another owner's row already has. Re-sending one's own checkpoint (a
retry after a lost answer) answers it as ``existing``. Without a token (Redis
transport) the owner is the service alone. The service is what the worker declares:
give each service a token user of its own to keep services apart.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dashboard import audit
from dashboard.audit import MAX_REASON
from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import get_store
from resilience.checkpoint import CHECKPOINT_ID_PATTERN, NAME_PATTERN, CheckpointRecord

from . import report
from .models import FleetCheckpoint
from .report import InstanceIn

MAX_ITEMS = 100
MAX_METADATA_BYTES = 16 * 1024
#: How far ahead of the dashboard's clock a ``created_at`` may be (workers' clocks
#: drift). Further is refused: such a row would stay its group's newest for good, so
#: retention's keep-last would delete the real checkpoints and its max age never come.
MAX_CLOCK_AHEAD = 3600.0
BLOB_SUFFIX = ".ckpt"
_Name = Annotated[str, Field(pattern=rf"^{NAME_PATTERN.pattern}$", max_length=128)]
_Size = Annotated[int, Field(ge=0, le=2**62)]


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint_id: Annotated[str, Field(pattern=rf"^{CHECKPOINT_ID_PATTERN.pattern}$")]
    agent_id: _Name
    workflow_id: _Name
    created_at: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
    raw_size: _Size
    stored_size: _Size
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    codec: Literal["zstd", "gzip", "none"]
    metadata: dict[str, Any] = {}
    blob: Annotated[str, Field(max_length=64)]

    @model_validator(mode="after")
    def _checked(self) -> CheckpointIn:
        if self.blob != self.checkpoint_id + BLOB_SUFFIX:
            raise ValueError(
                f"blob must be {self.checkpoint_id + BLOB_SUFFIX!r} (the dashboard's storage "
                "names blobs by id; paths are not accepted)"
            )
        size = len(json.dumps(self.metadata, allow_nan=False, separators=(",", ":")))
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return self

    def record(self) -> CheckpointRecord:
        return CheckpointRecord(
            checkpoint_id=self.checkpoint_id,
            agent_id=self.agent_id,
            workflow_id=self.workflow_id,
            created_at=self.created_at,
            raw_size=self.raw_size,
            stored_size=self.stored_size,
            sha256=self.sha256,
            codec=self.codec,
            metadata=self.metadata,
        )


class CheckpointsMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    protocol: Literal[1]
    type: Literal["checkpoints"]
    instance: InstanceIn
    checkpoints: Annotated[list[CheckpointIn], Field(max_length=MAX_ITEMS)]


def parse_message(body: bytes, *, now: float | None = None) -> CheckpointsMessageIn:
    """The validated message in ``body`` (``now``: the server's epoch seconds).

    Raises:
        ValueError: not JSON, a NUL character, or a rule broken (the field is named).
    """
    message = report.parse_message(body, CheckpointsMessageIn)
    latest = (time.time() if now is None else now) + MAX_CLOCK_AHEAD
    for i, item in enumerate(message.checkpoints):
        if item.created_at > latest:
            raise ValueError(
                f"checkpoints.{i}.created_at: more than {MAX_CLOCK_AHEAD:.0f} s ahead of "
                "the dashboard's clock"
            )
    return message


class CheckpointsRefused(PermissionError):
    """The message would add to, or replace, checkpoints its sender does not own."""

    def __init__(self, detail: str, *, workflows: list[str], checkpoints: list[str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.workflows = workflows
        self.checkpoints = checkpoints


def _foreign(
    message: CheckpointsMessageIn, user_id: Any, transport: str
) -> tuple[list[str], list[str]]:
    """The workflows and checkpoint ids of ``message`` owned by someone else.

    A workflow is someone else's when any of its rows was not reported through the
    fleet by this token user and service (a row the dashboard or a Django worker wrote
    has no owner: it is nobody's to add to). A checkpoint id that exists is someone
    else's unless this user and service reported it (then re-sending it is a retry).
    """
    # The transport is part of the owner: a row reported over HTTP whose token user was
    # deleted (user None) is not a Redis sender's to add to.
    me = (user_id, message.instance.service, transport == "redis")
    fields = ("fleet_owner__user_id", "fleet_owner__service", "fleet_owner__transport")

    def foreign(user: Any, service: str | None, via: str | None) -> bool:
        return service is None or (user, service, via == "redis") != me

    workflows = sorted({item.workflow_id for item in message.checkpoints})
    owners = (
        Checkpoint.objects.filter(workflow_id__in=workflows)
        .values_list("workflow_id", *fields)
        .distinct()
    )
    foreign_workflows = sorted({wf for wf, *owner in owners if foreign(*owner)})
    ids = [item.checkpoint_id for item in message.checkpoints]
    rows = Checkpoint.objects.filter(pk__in=ids).values_list("pk", *fields)
    foreign_ids = sorted(pk for pk, *owner in rows if foreign(*owner))
    return foreign_workflows, foreign_ids


def record_checkpoints(
    *,
    message: CheckpointsMessageIn,
    user: AbstractBaseUser | None = None,
    transport: str = "http",
) -> dict[str, Any]:
    """Add a row per new checkpoint, owned by ``user`` (the token's; None over Redis)
    and the message's service; the answer.

    Raises:
        CheckpointsRefused: a checkpoint of the message belongs to a workflow, or has
            the id of a row, that this user and service do not own. Nothing is recorded
            and the attempt is audited.
    """
    user_id = user.pk if user is not None else None
    workflows, taken = _foreign(message, user_id, transport)
    if workflows or taken:
        detail = (
            "checkpoints are bound to the service (and token user) that reported them: "
            + "; ".join(
                part
                for part in (
                    f"workflows owned by another service: {workflows}" if workflows else "",
                    f"checkpoint ids owned by another service: {taken}" if taken else "",
                )
                if part
            )
        )
        audit.record(
            user=user,
            source=f"fleet-{transport}",
            action="fleet.checkpoints.refused",
            target=f"{message.instance.service} ({message.instance.id})",
            reason=detail[:MAX_REASON],
            details={"workflows": workflows[:20], "checkpoints": taken[:20]},
        )
        raise CheckpointsRefused(detail, workflows=workflows, checkpoints=taken)
    ids = [item.checkpoint_id for item in message.checkpoints]
    existing = set(Checkpoint.objects.filter(pk__in=ids).values_list("pk", flat=True))
    store = get_store()
    recorded = []
    now = timezone.now()
    for item in message.checkpoints:
        if item.checkpoint_id in existing:
            continue
        existing.add(item.checkpoint_id)
        # The row and its owner together, or neither: a row left without its owner
        # would be nobody's, and this service's retries refused.
        with transaction.atomic():
            if not store.add_new_record(item.record()):  # recorded meanwhile elsewhere
                continue
            FleetCheckpoint.objects.update_or_create(
                checkpoint_id=item.checkpoint_id,
                defaults={
                    "user_id": user_id,
                    "service": message.instance.service,
                    "instance_id": message.instance.id,
                    "transport": transport,
                    "recorded_at": now,
                },
            )
        recorded.append(item.checkpoint_id)
    return {
        "recorded": recorded,
        "existing": [i for i in ids if i not in recorded],
        "received_at": datetime.now(UTC).isoformat(),
    }
