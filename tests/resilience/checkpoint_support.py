"""What the checkpoint tests share: a small agent state and where a blob lives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resilience.checkpoint import LocalCheckpointStore, StateCheckpointManager

STATE: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "hello " * 50},
        {"role": "assistant", "content": "hi"},
    ],
    "step": 7,
    "scores": [0.5, 1.25, -3.0],
    "done": False,
    "note": None,
}


def blob_path(manager: StateCheckpointManager, checkpoint_id: str) -> Path:
    store = manager.store
    assert isinstance(store, LocalCheckpointStore)
    return store.files.path(checkpoint_id)
