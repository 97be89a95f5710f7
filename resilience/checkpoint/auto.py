"""AutoCheckpointer: checkpoint every N operations and/or every T seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from resilience._validate import duration, positive_int
from resilience.checkpoint._ids import validate_name

if TYPE_CHECKING:
    from resilience.checkpoint.manager import StateCheckpointManager

__all__ = ["AutoCheckpointer"]


class AutoCheckpointer:
    """Saves ``state`` through ``manager`` on a schedule of calls and/or time.

    ``maybe_checkpoint`` counts calls: with ``checkpoint_interval=N`` and no forced or
    timed saves, the k-th save happens on call k*N. With ``time_interval=T``, a call
    also saves when T seconds (by ``clock``) have passed since the last save (or since
    construction). Every save - by count, by time or forced - restarts both the count
    and the timer. A save that raises leaves the checkpoint due, so the next call tries
    again; the error propagates to the caller.

    Args:
        manager: a :class:`StateCheckpointManager` (or the default ``checkpoint_manager``).
        agent_id / workflow_id: the names to save under (validated now).
        checkpoint_interval: save every N calls, >= 1.
        time_interval: also save when this many seconds (or a ``timedelta``) passed; > 0.
        clock: monotonic seconds.

    Raises:
        ConfigValueError / ConfigTypeError: an invalid argument.
    """

    def __init__(
        self,
        manager: StateCheckpointManager,
        agent_id: str,
        workflow_id: str,
        checkpoint_interval: int = 100,
        *,
        time_interval: float | timedelta | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manager = manager
        self.agent_id = validate_name("agent_id", agent_id)
        self.workflow_id = validate_name("workflow_id", workflow_id)
        self.checkpoint_interval = positive_int("checkpoint_interval", checkpoint_interval)
        self.time_interval = (
            None
            if time_interval is None
            else duration("time_interval", time_interval, allow_zero=False)
        )
        self.clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._last_save = clock()
        self._due = False
        self.calls = 0
        """Calls of ``maybe_checkpoint`` so far."""
        self.saves = 0
        """Checkpoints saved so far (all kinds)."""
        self.last_checkpoint_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"AutoCheckpointer({self.agent_id!r}, {self.workflow_id!r}, "
            f"every {self.checkpoint_interval} calls"
            + (f" or {self.time_interval}s" if self.time_interval is not None else "")
            + f", {self.saves} saves)"
        )

    def maybe_checkpoint(
        self, state: object, metadata: Mapping[str, Any] | None = None
    ) -> str | None:
        """Count one operation; save ``state`` if a checkpoint is due.

        Returns:
            The new checkpoint id, or None when no checkpoint was due.

        Raises:
            Whatever :meth:`StateCheckpointManager.save_checkpoint` raises.
        """
        if not self._tick():
            return None
        return self._save(state, metadata)

    def force_checkpoint(self, state: object, metadata: Mapping[str, Any] | None = None) -> str:
        """Save ``state`` now and restart the count and the timer.

        Returns:
            The new checkpoint id.
        """
        with self._lock:
            self._restart()
        return self._save(state, metadata)

    async def amaybe_checkpoint(
        self, state: object, metadata: Mapping[str, Any] | None = None
    ) -> str | None:
        """:meth:`maybe_checkpoint` whose save runs in a worker thread."""
        if not self._tick():
            return None
        return await self._asave(state, metadata)

    async def aforce_checkpoint(
        self, state: object, metadata: Mapping[str, Any] | None = None
    ) -> str:
        """:meth:`force_checkpoint` whose save runs in a worker thread."""
        with self._lock:
            self._restart()
        return await self._asave(state, metadata)

    def _tick(self) -> bool:
        # Count a call; True (with count and timer restarted) when a save is due.
        with self._lock:
            self.calls += 1
            self._count += 1
            due = self._due or self._count >= self.checkpoint_interval
            if not due and self.time_interval is not None:
                due = self.clock() - self._last_save >= self.time_interval
            if due:
                self._restart()
            return due

    def _restart(self) -> None:
        # Called with the lock held; the save itself runs outside it.
        self._count = 0
        self._due = False
        self._last_save = self.clock()

    def _saved(self, checkpoint_id: str) -> str:
        with self._lock:
            self.saves += 1
            self.last_checkpoint_id = checkpoint_id
        return checkpoint_id

    def _failed(self) -> None:
        with self._lock:
            self._due = True

    def _save(self, state: object, metadata: Mapping[str, Any] | None) -> str:
        try:
            checkpoint_id = self.manager.save_checkpoint(
                state, self.agent_id, self.workflow_id, metadata
            )
        except BaseException:
            self._failed()
            raise
        return self._saved(checkpoint_id)

    async def _asave(self, state: object, metadata: Mapping[str, Any] | None) -> str:
        try:
            checkpoint_id = await self.manager.asave_checkpoint(
                state, self.agent_id, self.workflow_id, metadata
            )
        except BaseException:
            self._failed()
            raise
        return self._saved(checkpoint_id)
