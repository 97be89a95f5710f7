"""The Fleet page's websocket: a report with a transition reaches open pages at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.api import testing
from dashboard.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"host", b"localhost"), (b"origin", b"http://localhost")]


@database_sync_to_async
def session_cookie(username: str, *permissions: str) -> bytes:
    user = testing.make_user(username, *permissions)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@database_sync_to_async
def post_report(**changes: Any) -> int:
    from django.contrib.auth.models import User

    user = User.objects.filter(username="worker").first()
    token = testing.token_for(user or testing.make_user("worker", "fleet.report_fleet"))
    body = {
        "protocol": 1,
        "instance": {"id": "w-1", "service": "tools", "host": "h", "pid": 1, "version": "x",
                     "started_at": 1.0},
        "seq": 1, "sent_at": 2.0, "limiters": [], "acks": [],
        "breakers": [{"name": "search", "state": "open"}],
        "events": [{"kind": "breaker_state", "name": "search", "from_state": "closed",
                    "to_state": "open", "time": 2.0}],
        **changes,
    }  # fmt: skip
    response = Client().post(
        "/api/fleet/v1/report", json.dumps(body), content_type="application/json",
        **testing.bearer(token),
    )  # fmt: skip
    return response.status_code


@pytest.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()


async def open_socket(opened: list[WebsocketCommunicator], cookie: bytes | None) -> Any:
    headers = HEADERS + ([(b"cookie", cookie)] if cookie else [])
    communicator = WebsocketCommunicator(application, "/ws/fleet/", headers=headers)
    opened.append(communicator)
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_the_socket_needs_login_and_the_view_permission(
    sockets: list[WebsocketCommunicator],
) -> None:
    _, anonymous = await open_socket(sockets, None)
    assert not anonymous
    _, without = await open_socket(sockets, await session_cookie("nobody"))
    assert not without


async def test_a_reported_transition_is_pushed_to_open_fleet_pages(
    sockets: list[WebsocketCommunicator],
) -> None:
    cookie = await session_cookie("viewer", "dashboard.view_dashboard")
    communicator, connected = await open_socket(sockets, cookie)
    assert connected
    first = await communicator.receive_from(timeout=10)  # brought up to date on connect
    assert 'id="fleet-groups"' in first and "data-fleet-breaker" not in first
    assert await post_report() == 200
    html = await communicator.receive_from(timeout=10)
    assert 'id="fleet-groups" hx-swap-oob="innerHTML"' in html
    assert 'data-fleet-breaker="search"' in html
    assert "tools@h:1" in html
    assert "Reset</button>" not in html  # a viewer gets no action buttons


async def test_a_known_group_is_pushed_alone_and_a_new_one_brings_every_group(
    sockets: list[WebsocketCommunicator],
) -> None:
    cookie = await session_cookie("viewer", "dashboard.view_dashboard")
    assert await post_report() == 200  # "search" exists before the page opens
    communicator, connected = await open_socket(sockets, cookie)
    assert connected
    first = await communicator.receive_from(timeout=10)
    assert 'data-fleet-breaker="search"' in first
    closed = {"kind": "breaker_state", "name": "search", "from_state": "open",
              "to_state": "closed", "time": 3.0}  # fmt: skip
    assert await post_report(seq=2, events=[closed], breakers=[
        {"name": "search", "state": "closed"}, {"name": "other", "state": "closed"},
    ]) == 200  # fmt: skip
    html = await communicator.receive_from(timeout=10)
    assert 'id="fleet-groups"' not in html  # only the changed card, swapped in place
    assert html.count("<article") == 1 and 'hx-swap-oob="outerHTML"' in html
    assert 'data-fleet-breaker="search"' in html and "state-closed" in html
    opened = {"kind": "breaker_state", "name": "other", "from_state": "closed",
              "to_state": "open", "time": 4.0}  # fmt: skip
    assert await post_report(seq=3, events=[opened], breakers=[
        {"name": "search", "state": "closed"}, {"name": "other", "state": "open"},
    ]) == 200  # fmt: skip
    html = await communicator.receive_from(timeout=10)
    assert 'id="fleet-groups" hx-swap-oob="innerHTML"' in html  # "other" was never sent
    assert html.count("<article") == 2
