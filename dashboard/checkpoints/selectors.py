"""Reads: checkpoint rows, decoded states, integrity checks and orphan detection."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import orjson
from django.db.models import Count, F, QuerySet, Sum

from resilience.checkpoint import CHECKPOINT_ID_PATTERN
from resilience.errors import CheckpointCorruptedError, CheckpointNotFoundError

from .models import Checkpoint
from .store import get_manager, get_store

PREVIEW_MAX_CHARS = 200_000
"""The admin shows at most this many characters of pretty-printed state."""
DECODE_MAX_BYTES = 32 * 1024 * 1024
"""States whose JSON is larger are not decoded for a preview (download them instead)."""

Status = Literal["ok", "corrupted", "missing"]


def list_checkpoints(
    *, agent_id: str | None = None, workflow_id: str | None = None, limit: int | None = None
) -> QuerySet[Checkpoint]:
    """Checkpoints matching the filters (None = any), newest (last saved) first."""
    rows = Checkpoint.objects.order_by(F("seq").desc(nulls_last=True), "-checkpoint_id")
    if agent_id is not None:
        rows = rows.filter(agent_id=agent_id)
    if workflow_id is not None:
        rows = rows.filter(workflow_id=workflow_id)
    return rows[:limit] if limit is not None else rows


def get_checkpoint(*, checkpoint_id: str) -> Checkpoint | None:
    return Checkpoint.objects.filter(pk=checkpoint_id).first()


@dataclass(frozen=True, slots=True)
class Totals:
    count: int
    raw_bytes: int
    stored_bytes: int


def totals() -> Totals:
    agg = Checkpoint.objects.aggregate(
        count=Count("pk"), raw=Sum("raw_size"), stored=Sum("stored_size")
    )
    return Totals(count=agg["count"], raw_bytes=agg["raw"] or 0, stored_bytes=agg["stored"] or 0)


def load_state(*, checkpoint_id: str) -> Any:
    """The decoded state, verified first.

    Raises:
        ValueError: a malformed id.
        CheckpointNotFoundError: no blob.
        CheckpointCorruptedError: it failed verification.
    """
    return get_manager().load_checkpoint(checkpoint_id)


def state_json(*, checkpoint_id: str) -> bytes:
    """The decoded state as indented JSON bytes (same errors as :func:`load_state`)."""
    return orjson.dumps(load_state(checkpoint_id=checkpoint_id), option=orjson.OPT_INDENT_2)


def verify(*, checkpoint_id: str) -> Status:
    """``"ok"``, ``"corrupted"`` (fails verification or disagrees with its row) or
    ``"missing"`` (no blob). Raises ValueError for a malformed id."""
    try:
        return "ok" if get_manager().verify_checkpoint(checkpoint_id) else "corrupted"
    except CheckpointNotFoundError:
        return "missing"


def verify_many(*, checkpoint_ids: Iterable[str] | None = None) -> Iterator[tuple[str, Status]]:
    """(id, status) for the given ids, or for every row (oldest first) when None."""
    if checkpoint_ids is None:
        checkpoint_ids = (
            Checkpoint.objects.order_by("checkpoint_id")
            .values_list("checkpoint_id", flat=True)
            .iterator()
        )
    for checkpoint_id in checkpoint_ids:
        yield checkpoint_id, verify(checkpoint_id=checkpoint_id)


@dataclass(frozen=True, slots=True)
class StatePreview:
    """What the admin detail page shows for a checkpoint's state.

    ``status`` is ``"ok"`` (``text`` holds pretty JSON, cut after ``max_chars`` when
    ``truncated``), ``"corrupted"``, ``"missing"`` or ``"too_large"`` (not decoded).
    """

    status: Literal["ok", "corrupted", "missing", "too_large"]
    text: str = ""
    truncated: bool = False
    total_chars: int = 0
    detail: str = ""


def state_preview(
    *,
    checkpoint: Checkpoint,
    max_chars: int = PREVIEW_MAX_CHARS,
    max_decode_bytes: int = DECODE_MAX_BYTES,
) -> StatePreview:
    if checkpoint.raw_size > max_decode_bytes:
        return StatePreview(status="too_large", detail=f"{checkpoint.raw_size} bytes of JSON")
    try:
        state = load_state(checkpoint_id=checkpoint.checkpoint_id)
    except CheckpointCorruptedError as exc:
        return StatePreview(status="corrupted", detail=str(exc))
    except CheckpointNotFoundError as exc:
        return StatePreview(status="missing", detail=str(exc))
    text = orjson.dumps(state, option=orjson.OPT_INDENT_2).decode()
    return StatePreview(
        status="ok",
        text=text[:max_chars],
        truncated=len(text) > max_chars,
        total_chars=len(text),
    )


@dataclass(frozen=True, slots=True)
class Orphans:
    """``blobs``: blob ids without a row; ``rows``: row ids without a blob (sorted)."""

    blobs: tuple[str, ...]
    rows: tuple[str, ...]


def _written_at(checkpoint_id: str) -> float:
    modified = get_store().blobs.modified_at(checkpoint_id)
    if modified is not None:
        return modified
    # Storage without modification times: the id starts with its save time in µs.
    return int(checkpoint_id[3:17], 16) / 1_000_000


def find_orphans(*, grace: timedelta = timedelta(hours=1), now: float | None = None) -> Orphans:
    """Blobs without rows and rows without blobs.

    A blob written less than ``grace`` ago (by its modification time, or the time in
    its id) is not reported: its row may be about to be inserted (a save writes the
    blob first). Rows are read
    before blobs are listed, so a save racing this scan never shows up as a row
    without a blob.
    """
    now = time.time() if now is None else now
    rows = set(Checkpoint.objects.values_list("checkpoint_id", flat=True))
    blobs = set(get_store().iter_blob_ids())
    cutoff = now - grace.total_seconds()
    lonely_blobs = sorted(
        checkpoint_id
        for checkpoint_id in blobs - rows
        if CHECKPOINT_ID_PATTERN.fullmatch(checkpoint_id) and _written_at(checkpoint_id) <= cutoff
    )
    return Orphans(blobs=tuple(lonely_blobs), rows=tuple(sorted(rows - blobs)))
