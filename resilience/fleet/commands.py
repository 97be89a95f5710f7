"""The worker's side of operator commands: apply one to a local breaker, ack it, once.

Runs on the reporter thread only (see :mod:`resilience.fleet.reporter`), so the
memory of recent command ids needs no lock. A command id seen before is not applied
again: its first ack is returned, so a command delivered twice (a retried report, a
push and a report answer) acts once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from resilience.fleet.protocol import ACTIONS, Ack

__all__ = ["REMEMBERED_COMMANDS", "BreakerLookup", "CommandApplier"]

logger = logging.getLogger("resilience.fleet.reporter")  # the records keep their old name

REMEMBERED_COMMANDS = 1000


class BreakerLookup(Protocol):
    def get(self, name: str) -> Any: ...


class CommandApplier:
    """Applies the dashboard's commands to the breakers found in ``breakers``.

    Args:
        breakers: where a command's target is looked up by name.
        wall_clock: epoch seconds, for the acks' ``applied_at``.
    """

    def __init__(self, breakers: BreakerLookup, wall_clock: Callable[[], float]) -> None:
        self._breakers = breakers
        self._wall_clock = wall_clock
        self._done: OrderedDict[str, Ack] = OrderedDict()
        self.applied = 0
        """Commands applied successfully (a repeated one counts once)."""

    def apply(self, command: object) -> Ack:
        """Apply one command; returns its ack (never raises)."""
        if not isinstance(command, dict) or not isinstance(command.get("id"), str):
            return self._ack("", ok=False, error=f"malformed command: {command!r:.200}")
        command_id: str = command["id"]
        done = self._done.get(command_id)
        if done is not None:
            return done
        ack = self._execute(command_id, command)
        self._done[command_id] = ack
        while len(self._done) > REMEMBERED_COMMANDS:
            self._done.popitem(last=False)
        return ack

    def _execute(self, command_id: str, command: dict[str, Any]) -> Ack:
        action, target = command.get("action"), command.get("target")
        if command.get("kind") != "breaker" or action not in ACTIONS:
            return self._ack(command_id, ok=False, error=f"unsupported command {command!r:.200}")
        if not isinstance(target, str):
            return self._ack(command_id, ok=False, error=f"target must be a str, got {target!r}")
        breaker = self._breakers.get(target)
        if breaker is None:
            return self._ack(command_id, ok=False, error=f"no breaker named {target!r} here")
        actor, reason = command.get("actor"), command.get("reason")
        try:
            getattr(breaker, str(action))(
                actor=actor if isinstance(actor, str) else None,
                reason=reason if isinstance(reason, str) and reason else None,
            )
            state = breaker.state.value
        except Exception as exc:
            logger.exception("fleet: command %s failed", command_id)
            return self._ack(command_id, ok=False, error=repr(exc))
        self.applied += 1
        return self._ack(command_id, ok=True, state=str(state))

    def _ack(
        self, command_id: str, *, ok: bool, error: str | None = None, state: str | None = None
    ) -> Ack:
        return {
            "command_id": command_id,
            "ok": ok,
            "error": error,
            "state": state,
            "applied_at": self._wall_clock(),
        }
