"""What keeps a report cheap at fleet scale, and still right.

- the report endpoint's token check is cached a few seconds, and a revocation (token
  revoked, user deactivated, permission taken) is honoured at the next report;
- a report that changes nothing writes no row (its last_seen is batched), one that
  changes something is one UPDATE;
- the Fleet page's changed cards are rendered once for every socket of the process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard.api import testing, token_cache
from dashboard.api.models import ApiToken
from dashboard.api.tokens import revoke_token
from dashboard.asgi import application
from dashboard.fleet import live, selectors, services
from dashboard.fleet.models import FleetInstance
from dashboard.fleet.report import parse_report
from tests.dashboard.fleet.test_fleet import T0, report_body

REPORT = "/api/fleet/v1/report"


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    token_cache.reset()
    services.memory.clear()


def post(client: Client, token: str, **changes: Any) -> Any:
    return client.post(
        REPORT,
        json.dumps(report_body(**changes)),
        content_type="application/json",
        **testing.bearer(token),
    )


def queries_on(captured: CaptureQueriesContext, table: str) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if table in q["sql"]]


# -- the token check --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reporters_token_is_checked_once_then_cached(client: Client) -> None:
    token = testing.token_for(testing.make_user("worker", "fleet.report_fleet"))
    assert post(client, token).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert post(client, token, seq=2).status_code == 200
    assert not queries_on(captured, "api_apitoken")
    assert not queries_on(captured, "auth_permission")


@pytest.mark.django_db
def test_a_revoked_token_is_refused_at_its_next_report(client: Client) -> None:
    token = testing.token_for(testing.make_user("worker", "fleet.report_fleet"))
    assert post(client, token).status_code == 200
    revoke_token(token=ApiToken.objects.get(), actor=None, source="tests")
    assert post(client, token, seq=2).status_code == 401


@pytest.mark.django_db
def test_a_deactivated_user_or_a_permission_taken_is_honoured_at_once(client: Client) -> None:
    user = testing.make_user("worker", "fleet.report_fleet")
    token = testing.token_for(user)
    assert post(client, token).status_code == 200
    user.user_permissions.remove(Permission.objects.get(codename="report_fleet"))
    user = type(user).objects.get(pk=user.pk)  # a fresh permission cache
    assert post(client, token, seq=2).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="report_fleet"))
    assert post(client, token, seq=3).status_code == 200
    user.is_active = False
    user.save()
    assert post(client, token, seq=4).status_code == 401


@pytest.mark.django_db
def test_a_change_no_signal_announces_is_honoured_within_the_ttl(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server process revoked it (this one saw no signal): the cache entry
    lasts TTL seconds at most."""
    now = [1000.0]
    token_cache.reset(clock=lambda: now[0])
    token = testing.token_for(testing.make_user("worker", "fleet.report_fleet"))
    assert post(client, token).status_code == 200
    ApiToken.objects.update(revoked=True)  # an UPDATE: no post_save signal
    now[0] += token_cache.ttl() - 0.1
    assert post(client, token, seq=2).status_code == 200
    now[0] += 0.2
    assert post(client, token, seq=3).status_code == 401


# -- quiet reports ----------------------------------------------------------------------


def ingest(seq: int, now_offset: float = 0.0, **changes: Any) -> dict[str, Any]:
    body = json.dumps(report_body(seq=seq, **changes)).encode()
    return services.ingest_report(report=parse_report(body), now=T0 + timedelta(seconds=now_offset))


@pytest.mark.django_db
def test_a_report_that_changes_nothing_writes_no_row_and_its_last_seen_follows() -> None:
    ingest(1)
    with CaptureQueriesContext(connection) as captured:
        ingest(2, 0.3)
    assert not [sql for sql in queries_on(captured, "fleet_fleetinstance") if "UPDATE" in sql]
    row = FleetInstance.objects.get()
    assert (row.reports, row.last_seq, row.last_seen) == (1, 1, T0)
    ingest(3, 1.5)  # a second after the last flush: this one writes every waiting one
    row = FleetInstance.objects.get()
    assert (row.reports, row.last_seq, row.last_seen) == (3, 3, T0 + timedelta(seconds=1.5))
    ingest(4, 1.8)
    [shown] = selectors.instances(now=T0 + timedelta(seconds=2))  # pages flush first
    assert (shown["reports"], shown["last_seen"]) == (4, T0 + timedelta(seconds=1.8))


@pytest.mark.django_db
def test_a_report_that_changes_something_is_written_in_one_update() -> None:
    ingest(1)
    breakers = [{"name": "search", "state": "open", "calls": {"successful": 3}}]
    with CaptureQueriesContext(connection) as captured:
        ingest(2, 0.1, breakers=breakers)
    writes = [sql for sql in queries_on(captured, "fleet_fleetinstance") if "UPDATE" in sql]
    assert len(writes) == 1
    row = FleetInstance.objects.get()
    assert (row.reports, row.breakers[0]["state"]) == (2, "open")


@pytest.mark.django_db
def test_a_report_after_a_gap_or_from_another_server_is_written_in_full() -> None:
    ingest(1)
    ingest(3, 0.1, breakers=[{"name": "search", "state": "closed", "calls": {"successful": 3}}])
    assert FleetInstance.objects.get().last_seq == 3  # seq 2 went elsewhere: no skip
    FleetInstance.objects.update(breakers=[{"name": "search", "state": "open"}])  # elsewhere
    services.memory.last.clear()  # ... which this process never saw
    ingest(4, 0.2)
    assert FleetInstance.objects.get().breakers[0]["state"] == "closed"


@pytest.mark.django_db
def test_a_quiet_report_of_a_deleted_instance_brings_it_back() -> None:
    ingest(1)
    FleetInstance.objects.all().delete()
    ingest(2, 0.1)
    assert FleetInstance.objects.get().last_seq == 2


@pytest.mark.django_db
def test_a_quiet_report_still_answers_the_commands_waiting(operator: Any = None) -> None:
    ingest(1)
    user = testing.make_user("olga", "dashboard.view_dashboard", "breakers.reset_breaker")
    services.act_on_fleet_breaker(
        name="search", action="reset", user=user, reason="r", source="tests", now=T0
    )
    answer = ingest(2, 0.1)
    assert [c["target"] for c in answer["commands"]] == ["search"]


@pytest.mark.django_db
def test_flush_writes_every_waiting_instance_in_one_update() -> None:
    for name in ("i-1", "i-2", "i-3"):
        instance = {**report_body()["instance"], "id": name}
        ingest(1, instance=instance)
        ingest(2, 0.2, instance=instance)
    with CaptureQueriesContext(connection) as captured:
        assert services.flush_seen(now=T0 + timedelta(seconds=0.5)) == 3
    assert len(captured.captured_queries) == 1
    assert set(FleetInstance.objects.values_list("reports", flat=True)) == {2}


# -- the Fleet page: rendered once --------------------------------------------------------

HEADERS = [(b"host", b"localhost"), (b"origin", b"http://localhost")]


@database_sync_to_async
def cookie_for(username: str, *permissions: str) -> bytes:
    client = Client()
    client.force_login(testing.make_user(username, *permissions))
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@database_sync_to_async
def report_transition(token: str, seq: int, state: str) -> int:
    event = {"kind": "breaker_state", "name": "search", "from_state": "closed",
             "to_state": state, "time": 2.0}  # fmt: skip
    breakers = [{"name": "search", "state": state}]
    return int(post(Client(), token, seq=seq, breakers=breakers, events=[event]).status_code)


@pytest.fixture
async def opened() -> AsyncIterator[list[WebsocketCommunicator]]:
    made: list[WebsocketCommunicator] = []
    yield made
    for communicator in made:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_changed_cards_are_rendered_once_for_every_socket_of_the_process(
    opened: list[WebsocketCommunicator], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await database_sync_to_async(testing.token_for)(
        await database_sync_to_async(testing.make_user)("worker", "fleet.report_fleet")
    )
    assert await report_transition(token, 1, "open") == 200
    viewer = await cookie_for("viewer", "dashboard.view_dashboard")
    operator = await cookie_for("olga", "dashboard.view_dashboard", "breakers.reset_breaker")
    for cookie in (viewer, viewer, operator):
        communicator = WebsocketCommunicator(
            application, "/ws/fleet/", headers=[*HEADERS, (b"cookie", cookie)]
        )
        opened.append(communicator)
        assert (await communicator.connect())[0]
        assert "fleet-groups" in await communicator.receive_from(timeout=10)
    calls: list[int] = []
    real = selectors.breaker_groups

    def counted(**kwargs: Any) -> Any:
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "breaker_groups", counted)
    assert await report_transition(token, 2, "closed") == 200
    pushed = [await communicator.receive_from(timeout=10) for communicator in opened]
    assert len(calls) == 1  # one query and render for three sockets, two permission sets
    assert all(html.count("<article") == 1 and "state-closed" in html for html in pushed)
    assert "Reset</button>" not in pushed[0] and pushed[0] == pushed[1]
    assert "Reset</button>" in pushed[2]
    assert live.sockets.snapshot()[1]  # registered while open ...


@pytest.mark.django_db(transaction=True)
async def test_a_closed_socket_leaves_the_registry(opened: list[WebsocketCommunicator]) -> None:
    cookie = await cookie_for("viewer", "dashboard.view_dashboard")
    communicator = WebsocketCommunicator(
        application, "/ws/fleet/", headers=[*HEADERS, (b"cookie", cookie)]
    )
    assert (await communicator.connect())[0]
    await communicator.receive_from(timeout=10)
    assert live.sockets.snapshot()[1]
    await communicator.disconnect()
    assert live.sockets.snapshot()[1] == []  # ... and nothing is rendered for nobody
    assert not await database_sync_to_async(live.push)(["search"])


@pytest.mark.django_db
def test_a_quiet_report_keeps_a_slow_reporter_live_for_commands() -> None:
    """An instance reporting every 3 s (stale after 5 s) that last reported 2.5 s ago is
    live: the quiet report's last_seen is written before the command picks targets."""
    from dashboard.fleet.report import ReportIn

    def rep(seq: int) -> ReportIn:
        return ReportIn.model_validate(report_body(seq=seq))

    services.ingest_report(report=rep(1), now=T0)  # the full write
    services.ingest_report(report=rep(2), now=T0 + timedelta(seconds=3))  # quiet
    result = services.act_on_fleet_breaker(
        name="search", action="reset", user=None, source="tests", now=T0 + timedelta(seconds=5.5)
    )
    assert (result["instances"], result["unreachable"]) == (["i-1"], [])
