"""Fleet changes → the Fleet page's websocket, at once.

The consumer is one of the live pages' (``LiveConsumer``: login, the view permission,
joined and left like the others). A report that carries a breaker transition or a
command ack makes the report view
call :func:`notify`, which sends one ``fleet.changed`` message to the channel-layer
group; every connected Fleet page re-renders its groups (from the database, so in
cluster mode any server's browsers are right) and receives them as an htmx
out-of-band swap. The page also polls every few seconds for the call counters, which
change with every report. ``notify`` never fails a report: a channel-layer error is
logged and dropped.
"""

from __future__ import annotations

import logging
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


def notify() -> None:
    """Tell every open Fleet page that the fleet changed (never raises)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "fleet.changed"})
    except Exception:
        logger.exception("fleet: could not notify the Fleet pages")


def render_groups(user: Any) -> str:
    """The Fleet page's groups as an out-of-band fragment for ``user``."""
    context = {
        "groups": selectors.breaker_groups(),
        "limiters": selectors.limiter_groups(),
        "can": {action: user.has_perm(perm) for action, perm in PERMISSIONS.items()},
    }
    return render_to_string("dashboard/fleet/_groups_oob.html", context)


class FleetConsumer(LiveConsumer):
    """``/ws/fleet/``: the live pages' consumer (login, view permission, re-checks)."""

    page = "fleet"

    def group_name(self) -> str:
        return GROUP

    async def initial(self) -> str:
        # A (re)connected page is brought up to date at once.
        rendered: str = await database_sync_to_async(render_groups)(self.scope["user"])
        return rendered

    async def fleet_changed(self, event: dict[str, Any]) -> None:
        await self.send(text_data=await self.initial())
