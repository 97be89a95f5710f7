"""Fleet changes → the Fleet page's websocket, at once.

The consumer is one of the live pages' (``LiveConsumer``: login, the view permission,
joined and left like the others). A report that carries a breaker transition or a
command ack makes the report view (or the Redis link) call :func:`push` with the names
of the breakers concerned, right after storing the report: the cards of those groups
are rendered *once* (from the database, so every instance's state is there) per set of
action permissions among this process's Fleet sockets (usually one or two), and the
same fragment is handed to every such socket through :mod:`dashboard.live.fanout` (no
channel-layer hop, no per-socket query or render). Only changed groups are rendered:
the whole page of 50 instances x 20 breakers is ~250 KB of HTML and ~300 ms of
rendering, one group a fiftieth of it. A socket that was never sent one of the groups
(a new breaker), or a push whose group is gone, re-renders every group for itself. The
page also polls every few seconds for the call counters, which change with every report
(and for the order of groups).

Cluster mode (``REDIS_URL``): a report may be stored by any server, and browsers may be
connected to any. :func:`notify` also sends a ``fleet.changed`` message (the names and
the sending process) through the channel layer; the other processes' sockets render the
groups themselves, and the sender's own sockets ignore it (they had the push). Neither
function ever fails a report: errors are logged and dropped.

Concurrency: :func:`push` runs on the thread that stored the report (a request thread,
the Redis link's thread): it renders there, then schedules the hand-out on the server's
event loop (``call_soon_threadsafe``, in a fresh context), where the sockets live; hand-outs are
serialised by one asyncio lock so every socket sees pushes in the order they were made.
The registry of sockets (:data:`sockets`: the loop and a count per permission set) is
guarded by a threading lock: consumers join and leave on the loop, pushes read it from
other threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from dashboard import runtime
from dashboard.breakers.services import PERMISSIONS
from dashboard.live.consumers import LiveConsumer
from dashboard.live.fanout import local_groups

from . import selectors

logger = logging.getLogger(__name__)

GROUP = "fleet.changes"
MAX_NAMES = 100

Actions = tuple[tuple[str, bool], ...]  # a socket's action permissions, hashable


class Sockets:
    """This process's Fleet sockets: the event loop they live on, and how many hold
    each set of action permissions (what :func:`push` renders for)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: Counter[Actions] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.push_lock: asyncio.Lock | None = None

    def add(self, actions: Actions, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self.loop is not loop:
                self.loop, self.push_lock = loop, asyncio.Lock()
            self._actions[actions] += 1

    def discard(self, actions: Actions) -> None:
        with self._lock:
            self._actions[actions] -= 1
            if self._actions[actions] <= 0:
                del self._actions[actions]

    def snapshot(self) -> tuple[asyncio.AbstractEventLoop | None, list[Actions]]:
        with self._lock:
            return self.loop, list(self._actions)


sockets = Sockets()


def _origin() -> str:
    return runtime.identity().live_process


def message(names: Iterable[str] | None = None) -> dict[str, Any]:
    """The ``fleet.changed`` message for breakers ``names`` (None: anything may have)."""
    found = sorted(set(names)) if names is not None else None
    if found is not None and (not found or len(found) > MAX_NAMES):
        found = None
    return {"type": "fleet.changed", "names": found, "origin": _origin()}


def notify(names: Iterable[str] | None = None) -> None:
    """Tell the *other* server processes' Fleet pages that ``names`` changed (cluster
    mode only: on one process :func:`push` reached every socket). Never raises."""
    if not runtime.identity().cluster:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, message(names))
    except Exception:
        logger.exception("fleet: could not notify the Fleet pages")


def render_cards(names: Collection[str], variants: list[Actions]) -> dict[Actions, str] | None:
    """The cards of groups ``names`` (out-of-band swaps), one string per permission set;
    None if a group is gone (the sockets then re-render everything)."""
    groups = selectors.breaker_groups(names=names)
    if len(groups) != len(set(names)):
        return None
    return {
        actions: "".join(
            render_to_string(
                "dashboard/fleet/_breaker_group.html", {"g": g, "can": dict(actions), "oob": True}
            )
            for g in groups
        )
        for actions in variants
    }


async def _hand_out(event: dict[str, Any]) -> None:
    lock = sockets.push_lock
    if lock is None:
        return
    async with lock:
        await local_groups.group_send(GROUP, event)


def _start(loop: asyncio.AbstractEventLoop, event: dict[str, Any]) -> None:
    task = loop.create_task(_hand_out(event))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


def push(names: Iterable[str]) -> bool:
    """Render the cards of ``names`` once and hand them to this process's Fleet sockets.

    Returns whether a push was scheduled (False: no socket here, or nothing to push).
    Never raises.
    """
    found = sorted(set(names))
    loop, variants = sockets.snapshot()
    if not found or loop is None or not variants or loop.is_closed():
        return False
    try:
        html = render_cards(found, variants) if len(found) <= MAX_NAMES else None
        event = {"type": "fleet.cards", "names": found, "html": html}
        # A fresh context: the caller's (a sync_to_async thread's) would make the
        # sockets' own database hops think they run inside that thread (a deadlock).
        loop.call_soon_threadsafe(_start, loop, event, context=contextvars.Context())
    except Exception:
        logger.exception("fleet: could not push to the Fleet pages")
        return False
    return True


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


def actions_of(user: Any) -> Actions:
    """``user``'s action permissions as a hashable, sorted tuple."""
    return tuple(sorted((action, user.has_perm(perm)) for action, perm in PERMISSIONS.items()))


def render_groups(user: Any) -> str:
    """The Fleet page's groups as an out-of-band fragment for ``user``."""
    return render_all(dict(actions_of(user)))[0]


def render_all(can: dict[str, bool]) -> tuple[str, set[str]]:
    """Every group (an out-of-band fragment for ``can``), and the names rendered."""
    groups = selectors.breaker_groups()
    context = {"groups": groups, "limiters": selectors.limiter_groups(), "can": can}
    html = render_to_string("dashboard/fleet/_groups_oob.html", context)
    return html, {group["name"] for group in groups}


class FleetConsumer(LiveConsumer):
    """``/ws/fleet/``: the live pages' consumer (login, view permission, re-checks)."""

    page = "fleet"

    known: set[str] | None = None  # the groups this socket was sent
    actions: Actions | None = None  # registered in ``sockets`` while set

    def group_name(self) -> str:
        return GROUP

    async def initial(self) -> str:
        # A (re)connected page is brought up to date at once.
        if self.actions is None:
            self.actions = await database_sync_to_async(actions_of)(self.scope["user"])
            sockets.add(self.actions, asyncio.get_running_loop())
        rendered: tuple[str, set[str]] = await database_sync_to_async(render_all)(
            dict(self.actions)
        )
        html, self.known = rendered
        return html

    async def disconnect(self, code: int) -> None:
        if self.actions is not None:
            sockets.discard(self.actions)
            self.actions = None
        await super().disconnect(code)

    async def revoke(self, code: int) -> None:
        if self.actions is not None:
            sockets.discard(self.actions)
            self.actions = None
        await super().revoke(code)

    async def fleet_cards(self, event: dict[str, Any]) -> None:
        """A push of this process (:func:`push`): cards rendered once for every socket."""
        if self.actions is None:
            return
        rendered = event.get("html")
        html = rendered.get(self.actions) if isinstance(rendered, dict) else None
        if html is None or not self.known or not set(event["names"]) <= self.known:
            html = await self.initial()
        await self.send(text_data=html)

    async def fleet_changed(self, event: dict[str, Any]) -> None:
        """Another process stored a change (cluster mode): render it here."""
        if event.get("origin") == _origin() or self.actions is None:
            return  # this process pushed it already
        names = event.get("names")
        html: str | None = None
        if isinstance(names, list) and names and self.known and set(names) <= self.known:
            rendered = await database_sync_to_async(render_cards)(names, [self.actions])
            html = None if rendered is None else rendered[self.actions]
        if html is None:
            html = await self.initial()
        await self.send(text_data=html)
