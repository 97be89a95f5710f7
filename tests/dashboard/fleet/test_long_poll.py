"""The HTTP long-poll ``GET /api/fleet/v1/commands``: auth, hostile input, and a held
request answered by an operator's command as soon as it commits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import AsyncClient, Client

from dashboard.api import testing
from dashboard.fleet import live, services
from dashboard.fleet.models import CommandStatus, FleetCommand
from tests.dashboard.fleet.test_fleet import REPORT_URL, report_body

URL = "/api/fleet/v1/commands"

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_fleet() -> tuple[str, Any]:
    token = testing.token_for(testing.make_user("worker", "fleet.report_fleet"))
    response = Client().post(
        REPORT_URL, json.dumps(report_body()), content_type="application/json",
        **testing.bearer(token),
    )  # fmt: skip
    assert response.status_code == 200
    operator = testing.make_user("olga", "dashboard.view_dashboard", "breakers.reset_breaker")
    return token, operator


def reset(operator: Any) -> None:
    services.act_on_fleet_breaker(name="search", action="reset", user=operator, source="t")


def reset_in_thread(operator: Any) -> None:
    try:
        reset(operator)
    finally:
        connection.close()


async def test_the_long_poll_needs_a_reporting_token_and_refuses_bad_input() -> None:
    token, _ = await sync_to_async(setup_fleet)()
    client = AsyncClient()
    assert (await client.get(URL, {"instance": "i-1"})).status_code == 401
    viewer = await sync_to_async(testing.token_for)(
        await sync_to_async(testing.make_user)("viewer", "dashboard.view_dashboard")
    )
    assert (await client.get(URL, {"instance": "i-1"}, headers=bearer(viewer))).status_code == 403
    for query, names in [
        ({}, "instance"),
        ({"instance": "x" * 65}, "instance"),
        ({"instance": "a b"}, "instance"),
        ({"instance": "i-1", "wait": "soon"}, "wait"),
        ({"instance": "i-1", "wait": "nan"}, "wait"),
        ({"instance": "i-1", "wait": "31"}, "wait"),
        ({"instance": "i-1", "wait": "-1"}, "wait"),
    ]:
        response = await client.get(URL, query, headers=bearer(token))
        assert response.status_code == 400, query
        assert names in response.json()["detail"]
    assert (await client.post(URL, {}, headers=bearer(token))).status_code == 405


async def test_waiting_commands_are_answered_at_once_and_only_once() -> None:
    token, operator = await sync_to_async(setup_fleet)()
    await sync_to_async(reset)(operator)
    client = AsyncClient()
    first = await client.get(URL, {"instance": "i-1", "wait": "0"}, headers=bearer(token))
    assert [c["target"] for c in first.json()["commands"]] == ["search"]
    command = await FleetCommand.objects.aget()
    assert command.status == CommandStatus.DELIVERED
    again = await client.get(URL, {"instance": "i-1", "wait": "0"}, headers=bearer(token))
    assert again.json()["commands"] == []  # the reports' answers repeat it, not the poll


async def test_a_held_poll_is_answered_when_a_command_commits() -> None:
    token, operator = await sync_to_async(setup_fleet)()
    client = AsyncClient()
    held = asyncio.ensure_future(
        client.get(URL, {"instance": "i-1", "wait": "30"}, headers=bearer(token))
    )
    layer = get_channel_layer()
    while not layer.groups.get(live.wake_group("i-1")):  # noqa: ASYNC110 (no event to await)
        await asyncio.sleep(0.01)
    # A thread of its own: the held request occupies the test's thread-sensitive executor
    # (the OTel middleware is sync-only; under daphne each request has its own thread).
    await asyncio.to_thread(reset_in_thread, operator)  # on commit: wakes the instance
    response = await asyncio.wait_for(held, 25)
    assert [c["action"] for c in response.json()["commands"]] == ["reset"]
