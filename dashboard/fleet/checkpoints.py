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
``MAX_METADATA_BYTES`` of JSON. A row that already exists is never replaced (a worker
cannot rewrite another's record); the answer lists those ids.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dashboard.checkpoints.models import Checkpoint
from dashboard.checkpoints.store import get_store
from resilience.checkpoint import CHECKPOINT_ID_PATTERN, NAME_PATTERN, CheckpointRecord

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
    message = _parse(body)
    latest = (time.time() if now is None else now) + MAX_CLOCK_AHEAD
    for i, item in enumerate(message.checkpoints):
        if item.created_at > latest:
            raise ValueError(
                f"checkpoints.{i}.created_at: more than {MAX_CLOCK_AHEAD:.0f} s ahead of "
                "the dashboard's clock"
            )
    return message


def _parse(body: bytes) -> CheckpointsMessageIn:
    if b"\x00" in body or b"\\u0000" in body:
        raise ValueError("the message must not contain NUL characters")
    try:
        data = json.loads(body, parse_constant=lambda name: _refuse(name))
    except RecursionError:
        raise ValueError("the message is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the message must be a JSON object")
    try:
        return CheckpointsMessageIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise ValueError(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from None
    except RecursionError:
        raise ValueError("the message is nested too deeply") from None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def record_checkpoints(*, message: CheckpointsMessageIn) -> dict[str, Any]:
    """Add a row per new checkpoint (existing ids are left as they are); the answer."""
    ids = [item.checkpoint_id for item in message.checkpoints]
    existing = set(Checkpoint.objects.filter(pk__in=ids).values_list("pk", flat=True))
    store = get_store()
    recorded = []
    for item in message.checkpoints:
        if item.checkpoint_id in existing:
            continue
        existing.add(item.checkpoint_id)
        if not store.add_new_record(item.record()):  # recorded meanwhile by another writer
            continue
        recorded.append(item.checkpoint_id)
    return {
        "recorded": recorded,
        "existing": [i for i in ids if i not in recorded],
        "received_at": datetime.now(UTC).isoformat(),
    }
