"""One websocket consumer per live page; each sends htmx out-of-band fragments only.

A socket is refused (closed before the handshake completes, so the browser sees a
403) unless its user is logged in and may view the dashboard; the origin check is
done before, by ``AllowedHostsOriginValidator`` in ``dashboard.asgi``. On connect
each consumer sends its page's current state, so a page that reconnects after a
server restart is brought up to date without a reload.

An open socket is authorised again every ``LIVE_REAUTH_INTERVAL`` seconds (default
30): a user deactivated, stripped of the permission, or whose session was deleted or
logged out is disconnected with close code 4401 (no session) or 4403 (no permission),
and the page says "logged out". Logging out also closes that session's sockets at once:
the ``user_logged_out`` signal sends ``auth.session_ended`` to the session's group
(named by a hash of the session key, so no key travels through Redis).

Pushes from this process's broadcaster and sampler do not go through the channel layer:
:mod:`.fanout` hands the same rendered message to every consumer of the group. Under
daphne and uvicorn's websockets protocol the consumer writes the push's pre-built frame
to its socket (``deliver_frame``, no per-socket framing or compression); elsewhere it
sends it (``deliver``). Until a consumer has sent its initial state, it keeps those
messages in a backlog and sends them after, in order, as the channel layer's queue did.
A socket too far behind to take a frame is closed with 1013 (try again later), so the
page reconnects and reloads its state rather than showing a stale one.

Concurrency: each consumer runs one re-authorisation task on the server's event loop,
cancelled on disconnect; the database checks run in the sync thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from importlib import import_module
from typing import Any, ClassVar

from asgiref.sync import async_to_sync
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

from dashboard import runtime as process_runtime
from dashboard import selectors
from dashboard.permissions import VIEW_DASHBOARD

from . import broadcast, fragments, runtime
from .fanout import FrameWriter, Outcome, frame_writer, local_groups

CLOSE_LOGGED_OUT = 4401
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the htmx ws extension reconnects
CLOSE_FORBIDDEN = 4403
DEFAULT_REAUTH_INTERVAL = 30.0

logger = logging.getLogger(__name__)


def session_group(session_key: str) -> str:
    return "auth.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


@receiver(user_logged_out)
def _close_sockets_of_the_session(
    sender: Any, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    layer = get_channel_layer()
    if not key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(key), {"type": "auth.session_ended"})
    except Exception:  # never fail a logout because the channel layer is down
        logger.exception("could not close the websockets of a logged-out session")


def _reason_to_close(user_pk: Any, session_key: str | None) -> int | None:
    """Why a socket opened by ``user_pk`` in ``session_key`` must close now, else None."""
    user = get_user_model().objects.filter(pk=user_pk).first()
    if user is None or not user.is_active:
        return CLOSE_LOGGED_OUT
    if session_key is not None:
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        data = store.load()  # {} when the session was deleted or has expired
        if str(data.get(SESSION_KEY)) != str(user.pk):
            return CLOSE_LOGGED_OUT
        expected = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
        if expected and not constant_time_compare(str(data.get(HASH_SESSION_KEY, "")), expected):
            return CLOSE_LOGGED_OUT  # the password changed: Django ends other sessions
    if not user.has_perm(VIEW_DASHBOARD):
        return CLOSE_FORBIDDEN
    return None


_closing: set[asyncio.Task[None]] = set()  # lagging sockets being closed (strong refs)


class LiveConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    page: ClassVar[str]
    group: str = ""

    joined = False
    session_joined: str | None = None
    reauth: asyncio.Task[None] | None = None
    # Pushes that arrived before the initial state was sent (None once it was).
    backlog: list[dict[str, Any]] | None = None
    # Writes pre-built frames to this socket (None: the server has no such path).
    writer: FrameWriter | None = None
    lagging = False
    # Message types whose handler only sends ``html``: written as a frame as they are.
    frame_types: ClassVar[frozenset[str]] = frozenset({"live.fragment"})

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels' dispatch first hops to the database thread to close stale
        # connections, for every message of every socket: at 1,000 sockets, 1,000
        # serialised thread hops per push. These handlers reach the database only
        # through database_sync_to_async, which closes stale connections itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def deliver(self, message: dict[str, Any]) -> None:
        """A push from this process's fan-out (the same dict for every socket)."""
        if self.backlog is not None:
            self.backlog.append(message)
            return
        await self.dispatch(message)

    def wants(self, message: dict[str, Any]) -> bool | None:
        """Write ``message``'s frame (True), skip it (False), or ``deliver`` it (None)."""
        return True if message["type"] in self.frame_types else None

    def deliver_frame(self, message: dict[str, Any], frame: bytes) -> Outcome:
        """A push from this process's fan-out, as a frame built once for every socket."""
        writer = self.writer
        if writer is None or self.backlog is not None:
            return Outcome.FALLBACK
        wants = self.wants(message)
        if wants is None:
            return Outcome.FALLBACK
        if not wants:
            return Outcome.SKIPPED
        outcome = writer.write(frame)
        if outcome is Outcome.DROPPED:
            self.lagged()
        return outcome

    def lagged(self) -> None:
        """The socket stopped reading: no more pushes; close it so the page reloads."""
        if self.lagging:
            return
        self.lagging = True
        local_groups.discard(self.group, self)
        task = asyncio.get_running_loop().create_task(self.close(code=CLOSE_TRY_AGAIN))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def drain_backlog(self) -> None:
        """Send the pushes held while connecting, in order; later ones go straight out."""
        backlog = self.backlog or []
        while backlog:
            await self.dispatch(backlog.pop(0))
        self.backlog = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        if not await database_sync_to_async(user.has_perm)(VIEW_DASHBOARD):
            await self.close()
            return
        process_runtime.start().start_live()
        self.group = self.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.backlog = []
        local_groups.add(self.group, self)
        self.joined = True
        runtime.sampler.watchers[self.page] += 1
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        if session_key:
            self.session_joined = session_group(session_key)
            await self.channel_layer.group_add(self.session_joined, self.channel_name)
        await self.accept()
        self.writer = frame_writer(self.base_send)
        self.reauth = asyncio.create_task(self._reauthorise(user.pk, session_key))
        html = await self.initial()
        if html:
            await self.send(text_data=html)
        await self.drain_backlog()

    async def _reauthorise(self, user_pk: Any, session_key: str | None) -> None:
        interval = float(getattr(settings, "LIVE_REAUTH_INTERVAL", DEFAULT_REAUTH_INTERVAL))
        while True:
            await asyncio.sleep(interval)
            try:
                code = await database_sync_to_async(_reason_to_close)(user_pk, session_key)
            except Exception:  # a database blip must not switch re-authorisation off
                logger.exception("could not re-authorise a websocket; trying again")
                continue
            if code is not None:
                await self.revoke(code)
                return

    async def auth_session_ended(self, event: dict[str, Any]) -> None:
        await self.revoke(CLOSE_LOGGED_OUT)

    async def revoke(self, code: int) -> None:
        """Close for lost access; no push reaches the socket from now on."""
        local_groups.discard(self.group, self)
        self.backlog = None
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        task, self.reauth = self.reauth, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.session_joined is not None:
            await self.channel_layer.group_discard(self.session_joined, self.channel_name)
            self.session_joined = None
        if self.joined:
            self.joined = False
            local_groups.discard(self.group, self)
            runtime.sampler.watchers[self.page] -= 1
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def group_name(self) -> str:
        """The channel-layer group this page listens to (per process in cluster mode)."""
        return broadcast.group(self.page)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The pages only listen; anything a client sends is ignored."""

    async def initial(self) -> str:
        """The fragments that bring a freshly (re)connected page up to date."""
        return ""

    async def live_fragment(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])


def _snapshots() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return selectors.breaker_overview(history=0), selectors.limiter_overview()


class OverviewConsumer(LiveConsumer):
    page = "overview"
    frame_types = frozenset({"live.fragment", "breaker.state"})

    async def initial(self) -> str:
        breakers, limiters = _snapshots()
        summary = fragments.overview_summary(
            health=selectors.health(breakers),
            counts=selectors.state_counts(breakers),
            busiest=selectors.busiest_limiters(limiters),
            limiter_count=len(limiters),
        )
        return summary + "".join(fragments.overview_chip(b, oob=True) for b in breakers)

    async def breaker_state(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])


class BreakersConsumer(LiveConsumer):
    page = "breakers"

    known: set[str]
    actions: dict[str, bool]

    async def initial(self) -> str:
        user = self.scope["user"]
        self.actions, cards = await database_sync_to_async(self._cards)(user)
        self.known = {card.name for card in cards}
        return fragments.breaker_cards(cards, actions=self.actions)

    @staticmethod
    def _cards(
        user: Any, names: list[str] | None = None
    ) -> tuple[dict[str, bool], list[selectors.BreakerCard]]:
        return fragments.actions_for(user.has_perm), selectors.breaker_cards(names=names)

    def wants(self, message: dict[str, Any]) -> bool | None:
        kind = message["type"]
        if kind == "breaker.state":
            # A breaker this page does not show yet needs its card: ``deliver``.
            return True if message["name"] in self.known else None
        if kind == "breaker.history":
            return message["name"] in self.known
        return super().wants(message)

    async def deliver(self, message: dict[str, Any]) -> None:
        if self.backlog is None and message.get("name", "") not in self.known:
            # A breaker this page does not show yet needs its card from the database:
            # through this socket's own queue, so the fan-out does not wait for it and
            # the card and its later pushes keep their order.
            await self.channel_layer.send(self.channel_name, message)
            return
        await super().deliver(message)

    async def breaker_state(self, event: dict[str, Any]) -> None:
        name = event["name"]
        if name in self.known:
            await self.send(text_data=event["html"])
            return
        # Registered after this page was rendered: the page needs the whole card.
        _, cards = await database_sync_to_async(self._cards)(self.scope["user"], [name])
        if cards and name not in self.known:
            self.known.add(name)
            await self.send(text_data=fragments.breaker_added(cards[0], actions=self.actions))

    async def breaker_history(self, event: dict[str, Any]) -> None:
        if event["name"] in self.known:
            await self.send(text_data=event["html"])


class LimitersConsumer(LiveConsumer):
    page = "limiters"

    async def initial(self) -> str:
        rows = [
            {**lim, "allowed_rate": None, "rejected_rate": None}
            for lim in selectors.limiter_overview()
        ]
        return fragments.limiter_rows(rows)


class MetricsConsumer(LiveConsumer):
    page = "metrics"

    async def initial(self) -> str:
        return fragments.sample_history(list(runtime.sampler.samples))
