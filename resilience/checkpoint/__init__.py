"""State checkpoints: verified, compressed JSON snapshots of agent/workflow state.

Public API::

    manager = StateCheckpointManager("./checkpoints", compression=True, signing_key=None)
    checkpoint_id = manager.save_checkpoint(state, "agent_1", "workflow_1")
    state = manager.load_checkpoint(checkpoint_id)

    auto = AutoCheckpointer(manager, "agent_1", "workflow_1", checkpoint_interval=100)
    auto.maybe_checkpoint(state)

Storage is pluggable through :class:`CheckpointStore` (see
:mod:`resilience.checkpoint.store`); the default is :class:`LocalCheckpointStore` (a file
per blob), :class:`SqliteCheckpointStore` keeps blobs in SQLite (one sync per save).
"""

from __future__ import annotations

from resilience.checkpoint._default import (
    checkpoint_manager,
    get_default_checkpoint_manager,
    set_default_checkpoint_manager,
)
from resilience.checkpoint._ids import CHECKPOINT_ID_PATTERN, NAME_PATTERN
from resilience.checkpoint.auto import AutoCheckpointer
from resilience.checkpoint.compression import (
    CODECS,
    Codec,
    CodecRegistry,
    UnknownCodecError,
    register_codec,
)
from resilience.checkpoint.local import FileBlobStore, LocalCheckpointStore, SqliteMetadataIndex
from resilience.checkpoint.manager import StateCheckpointManager
from resilience.checkpoint.results import CleanupResult, RebuildResult
from resilience.checkpoint.sqlite import SqliteCheckpointStore
from resilience.checkpoint.store import (
    RECORD_FIELDS,
    BlobStore,
    CheckpointRecord,
    CheckpointStore,
    CompositeCheckpointStore,
    MetadataIndex,
)

__all__ = [
    "AutoCheckpointer",
    "BlobStore",
    "CHECKPOINT_ID_PATTERN",
    "CODECS",
    "CheckpointRecord",
    "CheckpointStore",
    "CleanupResult",
    "Codec",
    "CodecRegistry",
    "CompositeCheckpointStore",
    "FileBlobStore",
    "LocalCheckpointStore",
    "MetadataIndex",
    "NAME_PATTERN",
    "RECORD_FIELDS",
    "RebuildResult",
    "SqliteCheckpointStore",
    "SqliteMetadataIndex",
    "StateCheckpointManager",
    "UnknownCodecError",
    "checkpoint_manager",
    "get_default_checkpoint_manager",
    "register_codec",
    "set_default_checkpoint_manager",
]
