"""Open websockets are authorised again: on logout at once, otherwise on an interval."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.test import Client

from dashboard.asgi import application
from dashboard.live import runtime
from dashboard.live.broadcast import group
from dashboard.live.consumers import CLOSE_FORBIDDEN, CLOSE_LOGGED_OUT
from dashboard.live.fanout import local_groups

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/live/limiters/"


@database_sync_to_async
def logged_in(username: str) -> tuple[User, Client]:
    user = User.objects.create_user(username)
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    return user, client


@pytest.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()
    await runtime.stop()


async def _open(client: Client, opened: list[WebsocketCommunicator]) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application,
        PATH,
        headers=[(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)],
    )
    opened.append(communicator)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _close_code(communicator: WebsocketCommunicator) -> int:
    while True:
        message = await communicator.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return int(message.get("code", 1000))


async def _stays_open(communicator: WebsocketCommunicator, polls: int = 5) -> bool:
    """No close among what arrives over a few short waits (page updates may arrive)."""
    # (receive_output's timeout would cancel the consumer: read the queue instead.)
    for _ in range(polls):
        await asyncio.sleep(0.1)
        while not communicator.output_queue.empty():
            if communicator.output_queue.get_nowait()["type"] == "websocket.close":
                return False
    return True


async def test_logging_out_closes_the_sessions_sockets_with_4401(
    sockets: list[WebsocketCommunicator], settings: Any
) -> None:
    settings.LIVE_REAUTH_INTERVAL = 3600  # only the logout can close it here
    _, client = await logged_in("vera")
    _, other = await logged_in("otto")
    mine = await _open(client, sockets)
    theirs = await _open(other, sockets)
    await database_sync_to_async(client.post)("/accounts/logout/")
    assert await _close_code(mine) == CLOSE_LOGGED_OUT
    assert await _stays_open(theirs)  # another session of another user stays open


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("deactivate", CLOSE_LOGGED_OUT),
        ("delete_sessions", CLOSE_LOGGED_OUT),
        ("remove_permission", CLOSE_FORBIDDEN),
    ],
)
async def test_an_open_socket_is_closed_when_its_user_loses_access(
    sockets: list[WebsocketCommunicator], settings: Any, change: str, code: int
) -> None:
    settings.LIVE_REAUTH_INTERVAL = 0.05
    user, client = await logged_in("vera")
    communicator = await _open(client, sockets)

    def revoke() -> None:
        if change == "deactivate":
            User.objects.filter(pk=user.pk).update(is_active=False)
        elif change == "delete_sessions":
            Session.objects.all().delete()
        else:
            user.user_permissions.clear()

    await database_sync_to_async(revoke)()
    assert await _close_code(communicator) == code


async def test_a_socket_closed_for_lost_access_gets_no_more_pushes(
    sockets: list[WebsocketCommunicator], settings: Any
) -> None:
    settings.LIVE_REAUTH_INTERVAL = 0.05
    user, client = await logged_in("vera")
    communicator = await _open(client, sockets)
    await database_sync_to_async(user.user_permissions.clear)()
    assert await _close_code(communicator) == CLOSE_FORBIDDEN
    # Closed, but the client has not answered yet: the sampler's next push skips it.
    assert local_groups.count(group("limiters")) == 0
    await runtime.sampler.tick()
    assert communicator.output_queue.empty()


async def test_a_socket_whose_user_keeps_access_stays_open(
    sockets: list[WebsocketCommunicator], settings: Any
) -> None:
    settings.LIVE_REAUTH_INTERVAL = 0.05
    _, client = await logged_in("vera")
    communicator = await _open(client, sockets)
    assert await _stays_open(communicator)


async def test_a_failed_check_does_not_switch_re_authorisation_off(
    sockets: list[WebsocketCommunicator], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.live import consumers

    settings.LIVE_REAUTH_INTERVAL = 0.05
    user, client = await logged_in("vera")
    real = consumers._reason_to_close
    calls = {"n": 0}

    def flaky(user_pk: Any, session_key: str | None) -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database blip")
        return real(user_pk, session_key)

    monkeypatch.setattr(consumers, "_reason_to_close", flaky)
    communicator = await _open(client, sockets)
    await database_sync_to_async(User.objects.filter(pk=user.pk).update)(is_active=False)
    # Polled, not awaited with receive_output: without the fix nothing ever arrives.
    for _ in range(100):
        if calls["n"] >= 2 and not communicator.output_queue.empty():
            message = communicator.output_queue.get_nowait()
            if message["type"] == "websocket.close":
                assert message.get("code") == CLOSE_LOGGED_OUT
                return
        await asyncio.sleep(0.05)
    pytest.fail(f"the socket stayed open after {calls['n']} checks")
