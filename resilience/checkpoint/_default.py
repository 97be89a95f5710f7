"""The process-wide default manager, created on first use (never at import)."""

from __future__ import annotations

import os
import threading
from typing import Any, cast

from resilience.checkpoint.manager import StateCheckpointManager

__all__ = [
    "ENV_CHECKPOINT_DIR",
    "checkpoint_manager",
    "get_default_checkpoint_manager",
    "set_default_checkpoint_manager",
]

ENV_CHECKPOINT_DIR = "RESILIENCE_CHECKPOINT_DIR"

_lock = threading.Lock()
_default: StateCheckpointManager | None = None


def get_default_checkpoint_manager() -> StateCheckpointManager:
    """The default manager; on first use, one over ``$RESILIENCE_CHECKPOINT_DIR``
    (default ``./checkpoints``, read at that moment) unless one was installed."""
    global _default
    manager = _default
    if manager is None:
        with _lock:
            if _default is None:
                _default = StateCheckpointManager(
                    os.environ.get(ENV_CHECKPOINT_DIR) or "./checkpoints"
                )
            manager = _default
    return manager


def set_default_checkpoint_manager(
    manager: StateCheckpointManager | None,
) -> StateCheckpointManager | None:
    """Install ``manager`` as the default (e.g. a Django-backed one); None resets to lazy.

    Args:
        manager: the new default, or None to go back to the env-configured one.

    Raises:
        TypeError: ``manager`` is not a :class:`StateCheckpointManager` or None.

    Returns:
        The previous default (None if it had not been created yet).
    """
    global _default
    if manager is not None and not isinstance(manager, StateCheckpointManager):
        raise TypeError(f"manager must be a StateCheckpointManager or None, got {manager!r}")
    with _lock:
        previous, _default = _default, manager
    return previous


class _DefaultManagerProxy:
    """Forwards every attribute to :func:`get_default_checkpoint_manager`'s result."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(get_default_checkpoint_manager(), name)

    def __repr__(self) -> str:
        current = _default
        return (
            f"<default checkpoint manager: {current!r}>"
            if current
            else ("<default checkpoint manager (not created yet)>")
        )


checkpoint_manager = cast(StateCheckpointManager, _DefaultManagerProxy())
"""The default manager, as in the seed: ``checkpoint_manager.save_checkpoint(...)``.

A proxy: attribute access goes to :func:`get_default_checkpoint_manager`, so importing
creates nothing on disk and :func:`set_default_checkpoint_manager` takes effect at once.
"""
