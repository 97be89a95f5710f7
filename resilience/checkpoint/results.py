"""Small frozen results returned by the manager's maintenance operations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CleanupResult", "RebuildResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupResult:
    """What :meth:`StateCheckpointManager.cleanup` removed (or would remove, dry run).

    Attributes:
        checkpoint_ids: the ids, newest first.
        count: ``len(checkpoint_ids)``.
        stored_bytes: the sum of their ``stored_size``.
        dry_run: True when nothing was actually removed.
    """

    checkpoint_ids: tuple[str, ...]
    count: int
    stored_bytes: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return {
            "checkpoint_ids": list(self.checkpoint_ids),
            "count": self.count,
            "stored_bytes": self.stored_bytes,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RebuildResult:
    """What :meth:`StateCheckpointManager.rebuild_index` found.

    Attributes:
        indexed: blobs that verified and are now in the index.
        corrupted: ids of blobs that failed verification (left on disk, not indexed).
        removed: ids dropped from the index because their blob is missing or corrupted.
    """

    indexed: int
    corrupted: tuple[str, ...]
    removed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return {
            "indexed": self.indexed,
            "corrupted": list(self.corrupted),
            "removed": list(self.removed),
        }
