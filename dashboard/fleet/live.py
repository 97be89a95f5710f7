"""Fleet changes → the Fleet page's websocket, at once.

The consumer is one of the live pages' (``LiveConsumer``: login, the view permission,
joined and left like the others). A report that carries a breaker transition or a
command ack makes the report view (or the Redis link) call :func:`notify` with the names
of the breakers concerned, which sends one ``fleet.changed`` message to the
channel-layer group; every connected Fleet page re-renders those groups (from the
database, so in cluster mode any server's browsers are right) and receives each as an
htmx out-of-band swap of its card. Only changed groups are rendered: a fleet of 50
instances x 20 breakers is ~250 KB of HTML and ~300 ms of rendering as a whole, one
group a fiftieth of it. A socket that was never sent one of the groups (a new breaker),
or a message without names, gets every group. The page also polls every few seconds for
the call counters, which change with every report (and for the order of groups).
``notify`` never fails a report: a channel-layer error is logged and dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from dashboard.breakers.services import PERMISSIONS
from dashboard.live.consumers import LiveConsumer

from . import selectors

logger = logging.getLogger(__name__)

GROUP = "fleet.changes"


MAX_NAMES = 100


def message(names: Iterable[str] | None = None) -> dict[str, Any]:
    """The ``fleet.changed`` message for breakers ``names`` (None: anything may have)."""
    found = sorted(set(names)) if names is not None else None
    if found is not None and (not found or len(found) > MAX_NAMES):
        found = None
    return {"type": "fleet.changed", "names": found}


def notify(names: Iterable[str] | None = None) -> None:
    """Tell every open Fleet page that breakers ``names`` changed (never raises)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, message(names))
    except Exception:
        logger.exception("fleet: could not notify the Fleet pages")


def wake_group(instance_id: str) -> str:
    """The channel-layer group of an instance's held long-polls (a valid group name)."""
    digest = hashlib.sha1(instance_id.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"fleet.commands.{digest}"


def wake(instance_ids: Iterable[str]) -> None:
    """Answer the held ``GET /api/fleet/v1/commands`` of these instances now (never raises).

    Through the channel layer, so a long-poll held by another server process (cluster
    mode, channels-redis) is woken too.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        for instance_id in set(instance_ids):
            async_to_sync(layer.group_send)(wake_group(instance_id), {"type": "fleet.command"})
    except Exception:
        logger.exception("fleet: could not wake the instances' long-polls")


def _can(user: Any) -> dict[str, bool]:
    return {action: user.has_perm(perm) for action, perm in PERMISSIONS.items()}


def render_groups(user: Any) -> str:
    """The Fleet page's groups as an out-of-band fragment for ``user``."""
    return render_all(user)[0]


def render_all(user: Any) -> tuple[str, set[str]]:
    """Every group (an out-of-band fragment for ``user``), and the names rendered."""
    groups = selectors.breaker_groups()
    context = {"groups": groups, "limiters": selectors.limiter_groups(), "can": _can(user)}
    html = render_to_string("dashboard/fleet/_groups_oob.html", context)
    return html, {group["name"] for group in groups}


def render_changed(user: Any, names: Collection[str]) -> str | None:
    """The cards of groups ``names``, each an out-of-band swap; None if one is gone."""
    groups = selectors.breaker_groups(names=names)
    if len(groups) != len(set(names)):
        return None
    can = _can(user)
    return "".join(
        render_to_string("dashboard/fleet/_breaker_group.html", {"g": g, "can": can, "oob": True})
        for g in groups
    )


class FleetConsumer(LiveConsumer):
    """``/ws/fleet/``: the live pages' consumer (login, view permission, re-checks)."""

    page = "fleet"

    def group_name(self) -> str:
        return GROUP

    known: set[str] | None = None  # the groups this socket was sent

    async def initial(self) -> str:
        # A (re)connected page is brought up to date at once.
        rendered: tuple[str, set[str]] = await database_sync_to_async(render_all)(
            self.scope["user"]
        )
        self.known = rendered[1]
        return rendered[0]

    async def fleet_changed(self, event: dict[str, Any]) -> None:
        names = event.get("names")
        html: str | None = None
        if isinstance(names, list) and names and self.known and set(names) <= self.known:
            html = await database_sync_to_async(render_changed)(self.scope["user"], names)
        if html is None:
            html = await self.initial()
        await self.send(text_data=html)
