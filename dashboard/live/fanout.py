"""In-process fan-out: one rendered fragment, handed to every socket of this process.

The live groups are per process (see :mod:`.broadcast`): only this process's
broadcaster and sampler push to them. Sending those pushes through the channel layer
costs, for *each* socket, a deep copy of the message, a queue put, a wake-up of the
consumer's task and (in channels' ``dispatch``) a hop to the database thread to close
stale connections: at 1,000 sockets that is most of a push. Here the message is
rendered once and handed to each consumer of the group directly, so a push costs one
frame write per socket.

Consumers still join the channel-layer groups as before, so messages that other code
sends through the layer (alert banners, logout) keep arriving the usual way.

Concurrency model: everything runs on the server's event loop (consumers join and leave
there, the broadcaster and sampler push from there); nothing here is thread-safe and
nothing needs to be. Members are held weakly, so a consumer that died without
``disconnect`` does not linger. A consumer that joined but has not sent its initial
state yet holds the pushes in a backlog (``LiveConsumer.deliver``), so a page never
shows a pushed state older than its initial one.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Member(Protocol):
    async def deliver(self, message: dict[str, Any]) -> None: ...


class LocalGroups:
    """This process's live consumers by group, and a direct ``group_send`` to them."""

    def __init__(self) -> None:
        self._groups: dict[str, weakref.WeakSet[Any]] = {}
        self.sent = 0
        self.errors = 0

    def add(self, group: str, member: Member) -> None:
        self._groups.setdefault(group, weakref.WeakSet()).add(member)

    def discard(self, group: str, member: Member) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._groups[group]

    def count(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    async def group_send(self, group: str, message: dict[str, Any]) -> int:
        """Deliver ``message`` to every member of ``group``; returns how many got it.

        Every member receives the same dict: members must not mutate it.
        """
        members = list(self._groups.get(group, ()))
        delivered = failed = 0
        first: Exception | None = None
        for member in members:
            try:
                await member.deliver(message)
            except Exception as exc:  # one broken socket must not starve the others
                failed += 1
                first = first or exc
            else:
                delivered += 1
        if first is not None:
            # Usually sockets that closed while the push was on its way: one line per push.
            self.errors += failed
            logger.warning(
                "live push to %s: %d of %d sockets failed, first: %r",
                group,
                failed,
                len(members),
                first,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
        self.sent += delivered
        return delivered

    def clear(self) -> None:
        self._groups.clear()
        self.sent = self.errors = 0


local_groups = LocalGroups()
