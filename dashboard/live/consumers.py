"""One websocket consumer per live page; each sends htmx out-of-band fragments only.

A socket is refused (closed before the handshake completes, so the browser sees a
403) unless its user is logged in and may view the dashboard; the origin check is
done before, by ``AllowedHostsOriginValidator`` in ``dashboard.asgi``. On connect
each consumer sends its page's current state, so a page that reconnects after a
server restart is brought up to date without a reload.
"""

from __future__ import annotations

from typing import Any, ClassVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard import selectors
from dashboard.permissions import VIEW_DASHBOARD

from . import broadcast, fragments, runtime


class LiveConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    page: ClassVar[str]
    group: ClassVar[str]

    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        if not await database_sync_to_async(user.has_perm)(VIEW_DASHBOARD):
            await self.close()
            return
        runtime.ensure_started()
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        runtime.sampler.watchers[self.page] += 1
        await self.accept()
        html = await self.initial()
        if html:
            await self.send(text_data=html)

    async def disconnect(self, code: int) -> None:
        if self.joined:
            self.joined = False
            runtime.sampler.watchers[self.page] -= 1
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
    group = broadcast.OVERVIEW

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
    group = broadcast.BREAKERS

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
    group = broadcast.LIMITERS

    async def initial(self) -> str:
        rows = [
            {**lim, "allowed_rate": None, "rejected_rate": None}
            for lim in selectors.limiter_overview()
        ]
        return fragments.limiter_rows(rows)


class MetricsConsumer(LiveConsumer):
    page = "metrics"
    group = broadcast.METRICS

    async def initial(self) -> str:
        return fragments.sample_history(list(runtime.sampler.samples))
