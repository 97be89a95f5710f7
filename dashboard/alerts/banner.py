"""The dashboard's live alert banner: a rendered fragment pushed to every live page.

Sent from the delivery worker's thread: with the in-memory channel layer, whose queues
belong to the server's event loop, the send runs on that loop
(``run_coroutine_threadsafe``); otherwise (channels-redis, tests) through
``async_to_sync``.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from .models import Alert


def banner_groups() -> tuple[str, ...]:
    """The live pages' groups of this process, where a banner alert is pushed."""
    from dashboard.live.broadcast import groups

    return groups()


def headline(alert: Alert, event: str) -> str:
    """The one-line title of an alert event: the banner, an email subject, webhook text."""
    subject = f" [{alert.subject}]" if alert.subject else ""
    return f"[{event.upper()}] {alert.severity}: {alert.rule.name}{subject}"


def banner_html(alert: Alert, event: str) -> str:
    try:
        page = reverse("alerts:index")
    except NoReverseMatch:  # the alerts page is not mounted in this project's URLs
        page = ""
    return render_to_string(
        "dashboard/alerts/_banner.html",
        {"alert": alert, "event": event, "headline": headline(alert, event), "page": page},
    )


def push_banner(alert: Alert, event: str, *, timeout: float = 5.0) -> bool:
    """Send the banner fragment to every live page's group; False without a channel layer."""
    layer = get_channel_layer()
    if layer is None:
        return False
    message = {
        "type": "live.fragment",
        "html": banner_html(alert, event),
        "alert": alert.as_dict(),
        "event": event,
    }

    async def send_all() -> None:
        for group in banner_groups():
            await layer.group_send(group, message)

    loop = _server_loop()
    if loop is not None and not _on_loop(loop):
        # The in-memory layer's queues belong to the server's loop: send from there.
        asyncio.run_coroutine_threadsafe(send_all(), loop).result(timeout)
    else:
        async_to_sync(send_all)()
    return True


def _server_loop() -> asyncio.AbstractEventLoop | None:
    try:
        from dashboard.live.broadcast import broadcaster
    except ImportError:  # pragma: no cover
        return None
    loop = broadcaster.loop
    if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running() and not loop.is_closed():
        return loop
    return None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
