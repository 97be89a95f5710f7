"""The fleet's dashboard side: the report endpoint, liveness, grouping, commands, pages.

A real :class:`resilience.fleet.FleetReporter` talks to the real endpoint through
Django's test client (a transport that posts with it), so the worker's and the
server's halves are tested against each other without a network.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from dashboard.api import testing
from dashboard.breakers.models import BreakerEvent
from dashboard.fleet import selectors, services
from dashboard.fleet.models import FleetCommand, FleetInstance
from dashboard.fleet.report import parse_report
from dashboard.models import AuditEntry
from resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from resilience.fleet import FleetReporter, TransportError, instance_info
from tests.resilience._fleet_fixtures import fail

REPORT_URL = "/api/fleet/v1/report"
API = "/api/observability/fleet"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


class ClientTransport:
    """Posts reports to the endpoint with Django's test client."""

    def __init__(self, client: Client, token: str) -> None:
        self.client = client
        self.token = token
        self.answers: list[dict[str, Any]] = []

    def send(self, body: bytes) -> dict[str, Any]:
        response = self.client.post(
            REPORT_URL, body, content_type="application/json", **testing.bearer(self.token)
        )
        if response.status_code != 200:
            raise TransportError(f"{response.status_code}: {response.content[:200]!r}")
        answer: dict[str, Any] = response.json()
        self.answers.append(answer)
        return answer


@pytest.fixture
def reporter_token() -> str:
    return testing.token_for(testing.make_user("worker", "fleet.report_fleet"))


@pytest.fixture
def operator() -> Any:
    return testing.make_user(
        "olga", "dashboard.view_dashboard", "breakers.reset_breaker", "breakers.operate_breaker"
    )


def make_reporter(client: Client, token: str, service: str = "planner") -> FleetReporter:
    return FleetReporter(ClientTransport(client, token), instance=instance_info(service=service))


def report_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol": 1,
        "instance": {
            "id": "i-1",
            "service": "tools",
            "host": "h1",
            "pid": 42,
            "version": "0.1.0",
            "started_at": T0.timestamp() - 100,
        },
        "seq": 1,
        "sent_at": T0.timestamp(),
        "breakers": [{"name": "search", "state": "closed", "calls": {"successful": 3}}],
        "limiters": [],
        "events": [],
        "acks": [],
    }
    body.update(changes)
    return body


# -- the endpoint ---------------------------------------------------------------------


def test_report_without_token_is_401_and_without_permission_403(client: Client) -> None:
    body = json.dumps(report_body())
    assert client.post(REPORT_URL, body, content_type="application/json").status_code == 401
    bad = client.post(
        REPORT_URL, body, content_type="application/json", **testing.bearer("rdt_nope")
    )
    assert bad.status_code == 401
    viewer = testing.token_for(testing.make_user("viewer", "dashboard.view_dashboard"))
    denied = client.post(
        REPORT_URL, body, content_type="application/json", **testing.bearer(viewer)
    )
    assert denied.status_code == 403
    assert "fleet.report_fleet" in denied.json()["detail"]
    assert not FleetInstance.objects.exists()


def test_a_browser_session_cannot_report(client: Client, operator: Any) -> None:
    client.force_login(operator)
    response = client.post(REPORT_URL, json.dumps(report_body()), content_type="application/json")
    assert response.status_code == 403
    assert not FleetInstance.objects.exists()


def test_report_is_csrf_exempt_for_token_callers(reporter_token: str) -> None:
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        REPORT_URL,
        json.dumps(report_body()),
        content_type="application/json",
        **testing.bearer(reporter_token),
    )
    assert response.status_code == 200
    assert response.json() == {"protocol": 1, "commands": [], "report_interval": 1.0}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "nested too deeply"),
        (json.dumps(report_body(sent_at=float("nan"))).encode(), "not valid JSON"),
        (json.dumps(report_body(sent_at=1e300)).encode(), "sent_at"),
        (json.dumps(report_body(protocol=2)).encode(), "protocol"),
        (json.dumps({**report_body(), "instance": None}).encode(), "instance"),
        (json.dumps(report_body(seq=0)).encode(), "seq"),
        (json.dumps(report_body(breakers=[{"name": "x", "state": "melted"}])).encode(), "state"),
        (json.dumps(report_body(breakers=[{"name": "x", "state": "open"}] * 2)).encode(), "unique"),
        (json.dumps(report_body(breakers=[{"name": "x" * 201, "state": "open"}])).encode(), "name"),
        (json.dumps(report_body(breakers=[{"name": "x\u0000", "state": "open"}])).encode(), "NUL"),
        (json.dumps(report_body(limiters=[{"name": "l", "allowed": -1}])).encode(), "allowed"),
        (json.dumps(report_body(acks=[{"command_id": 5, "ok": True}])).encode(), "command_id"),
    ],
)
def test_hostile_reports_are_400_naming_the_problem(
    client: Client, reporter_token: str, body: bytes, names: str
) -> None:
    response = client.post(
        REPORT_URL, body, content_type="application/json", **testing.bearer(reporter_token)
    )
    assert response.status_code == 400, response.content
    assert names in response.json()["detail"]
    assert not FleetInstance.objects.exists()


def test_instance_fields_out_of_column_range_are_400(client: Client, reporter_token: str) -> None:
    body = report_body()
    body["instance"] = {**body["instance"], "pid": 2**40}
    response = client.post(
        REPORT_URL,
        json.dumps(body),
        content_type="application/json",
        **testing.bearer(reporter_token),
    )
    assert response.status_code == 400
    assert "instance.pid" in response.json()["detail"]


def test_oversized_report_is_413(client: Client, reporter_token: str, settings: Any) -> None:
    settings.FLEET_MAX_REPORT_BYTES = 200
    response = client.post(
        REPORT_URL,
        json.dumps(report_body()),
        content_type="application/json",
        **testing.bearer(reporter_token),
    )
    assert response.status_code == 413


def test_get_on_the_report_endpoint_is_405(client: Client) -> None:
    assert client.get(REPORT_URL).status_code == 405


def test_parse_report_keeps_unknown_snapshot_fields() -> None:
    body = report_body(breakers=[{"name": "s", "state": "open", "opened_at": 5.0, "x": [1]}])
    report = parse_report(json.dumps(body).encode())
    assert report.breakers[0].model_dump(mode="json")["x"] == [1]


# -- worker and dashboard together ----------------------------------------------------


def test_a_worker_breaker_appears_and_a_reset_through_the_api_closes_it(
    client: Client, reporter_token: str, operator: Any
) -> None:
    breaker = CircuitBreaker("payments", CircuitBreakerConfig(failure_threshold=2, timeout=60))
    reporter = make_reporter(client, reporter_token)
    reporter._bus.subscribe(reporter._on_event)
    try:
        fail(breaker, 2)
        assert reporter.report_once()
    finally:
        reporter._bus.unsubscribe(reporter._on_event)

    api = testing.bearer(testing.token_for(operator))
    groups = client.get(f"{API}/circuit-breakers", **api).json()
    assert groups["count"] == 1
    group = groups["items"][0]
    assert (group["name"], group["state"], group["failures"]) == ("payments", "open", 2)
    assert group["instances"][0]["label"].startswith("planner@")
    history = BreakerEvent.objects.get(breaker="payments")
    assert history.to_state == "open"
    assert history.process == group["instances"][0]["label"]

    acted = client.post(
        f"{API}/circuit-breakers/payments/reset",
        {"reason": "upstream fixed"},
        content_type="application/json",
        **api,
    )
    assert acted.status_code == 202, acted.content
    batch = acted.json()["batch"]
    assert acted.json()["instances"] == [reporter.instance["id"]]
    pending = client.get(f"{API}/commands/{batch}", **api).json()["items"]
    assert [row["status"] for row in pending] == ["pending"]

    assert reporter.report_once()  # the answer carries the command; the worker applies it
    assert breaker.state.value == "closed"
    assert reporter.commands_applied == 1
    assert reporter.report_once()  # the ack rides on the next report
    applied = client.get(f"{API}/commands/{batch}", **api).json()["items"]
    assert [(row["status"], row["result_state"]) for row in applied] == [("applied", "closed")]
    assert client.get(f"{API}/circuit-breakers/payments", **api).json()["state"] == "closed"
    entry = AuditEntry.objects.get(action="fleet.breaker.reset")
    assert (entry.actor, entry.target, entry.reason) == ("olga", "payments", "upstream fixed")


def test_an_unacknowledged_command_is_repeated_and_applied_once(
    client: Client, reporter_token: str, operator: Any
) -> None:
    breaker = CircuitBreaker("search", CircuitBreakerConfig(failure_threshold=1))
    reporter = make_reporter(client, reporter_token)
    assert reporter.report_once()
    services.act_on_fleet_breaker(name="search", action="force_open", user=operator, source="t")
    first = reporter.transport.send(json.dumps(reporter.build_report()).encode())  # type: ignore[attr-defined]
    assert len(first["commands"]) == 1  # delivered, but this "worker" never applied it
    assert breaker.state.value == "closed"
    assert reporter.report_once()  # repeated in the next answer: applied now
    assert breaker.state.value == "forced_open"
    breaker.reset()
    assert reporter.report_once()  # acked; the repeat in this answer is not applied again
    assert breaker.state.value == "closed"
    assert reporter.commands_applied == 1
    assert FleetCommand.objects.get().status == "applied"


def test_a_command_for_a_breaker_the_worker_lacks_is_acked_failed(
    client: Client, reporter_token: str, operator: Any
) -> None:
    reporter = make_reporter(client, reporter_token)
    CircuitBreaker("ghost")
    assert reporter.report_once()
    from resilience.circuit_breaker import circuit_breaker_registry

    circuit_breaker_registry.remove("ghost")
    result = services.act_on_fleet_breaker(name="ghost", action="reset", user=operator, source="t")
    assert reporter.report_once() and reporter.report_once()
    (row,) = selectors.batch_commands(batch=result["batch"])
    assert row["status"] == "failed"
    assert "no breaker named 'ghost'" in row["error"]


def test_unknown_breaker_is_404_and_action_needs_its_permission(
    client: Client, reporter_token: str
) -> None:
    viewer = testing.make_user("viewer", "dashboard.view_dashboard", "breakers.reset_breaker")
    api = testing.bearer(testing.token_for(viewer))
    assert client.post(f"{API}/circuit-breakers/nope/reset", **api).status_code == 404
    CircuitBreaker("db")
    assert make_reporter(client, reporter_token).report_once()
    assert client.post(f"{API}/circuit-breakers/db/force_open", **api).status_code == 403
    assert client.post(f"{API}/circuit-breakers/db/explode", **api).status_code == 404
    assert client.post(f"{API}/circuit-breakers/db/reset", **api).status_code == 202


# -- liveness and grouping (injected time) ---------------------------------------------


def ingest(now: datetime, **changes: Any) -> None:
    services.ingest_report(
        report=parse_report(json.dumps(report_body(**changes)).encode()), now=now
    )


def test_an_instance_turns_stale_then_gone_by_its_last_report() -> None:
    ingest(T0)
    stale, gone = timedelta(seconds=5), timedelta(seconds=60)

    def status(after: float) -> str:
        rows = selectors.instances(
            now=T0 + timedelta(seconds=after), stale_after=stale, gone_after=gone
        )
        return rows[0]["status"]

    assert [status(0), status(4.9), status(5), status(59.9), status(60)] == [
        "live",
        "live",
        "stale",
        "stale",
        "gone",
    ]
    assert (
        selectors.breaker_groups(now=T0 + timedelta(seconds=59))[0]["instances"][0]["status"]
        == "stale"
    )
    assert selectors.breaker_groups(now=T0 + timedelta(seconds=60)) == []
    row = selectors.instances(now=T0 + timedelta(seconds=1))[0]
    assert (row["service"], row["host"], row["pid"], row["uptime_seconds"]) == (
        "tools",
        "h1",
        42,
        101.0,
    )


def test_groups_show_the_worst_state_first_and_sum_calls() -> None:
    def snap(state: str, ok: int, failed: int, rejected: int) -> dict[str, Any]:
        calls = {"successful": ok, "failed": failed, "rejected": rejected}
        return {"name": "search", "state": state, "calls": calls}

    ingest(T0, breakers=[snap("closed", 10, 1, 0), {"name": "db", "state": "closed"}])
    second = report_body()["instance"] | {"id": "i-2", "pid": 43}
    ingest(T0, instance=second, breakers=[snap("open", 5, 4, 7)])
    groups = selectors.breaker_groups(now=T0)
    assert [(g["name"], g["state"]) for g in groups] == [("search", "open"), ("db", "closed")]
    search = groups[0]
    assert (search["calls"], search["failures"], search["rejections"]) == (27, 5, 7)
    assert [i["state"] for i in search["instances"]] == ["open", "closed"]
    assert search["state_counts"] == {"closed": 1, "open": 1}


def test_commands_go_to_live_instances_only_and_expire_unreachable(operator: Any) -> None:
    ingest(T0)
    ingest(T0 + timedelta(seconds=10), instance=report_body()["instance"] | {"id": "i-2"})
    later = T0 + timedelta(seconds=10)
    result = services.act_on_fleet_breaker(
        name="search", action="disable", user=operator, source="t", now=later
    )
    assert (result["instances"], result["unreachable"]) == (["i-2"], ["i-1"])
    (row,) = selectors.batch_commands(batch=result["batch"], now=later)
    assert row["status"] == "pending"
    expired = later + timedelta(seconds=31)
    ingest(expired, instance=report_body()["instance"] | {"id": "i-2"})  # live, never acks
    (row,) = selectors.batch_commands(batch=result["batch"], now=expired)
    assert row["status"] == "unreachable"


def test_an_instance_starting_after_a_command_does_not_get_it(operator: Any) -> None:
    ingest(T0)
    services.act_on_fleet_breaker(name="search", action="reset", user=operator, source="t", now=T0)
    answer = services.ingest_report(
        report=parse_report(
            json.dumps(report_body(instance=report_body()["instance"] | {"id": "late"})).encode()
        ),
        now=T0 + timedelta(seconds=1),
    )
    assert answer["commands"] == []


def test_reason_too_long_is_rejected(operator: Any) -> None:
    ingest(T0)
    with pytest.raises(ValueError, match="reason"):
        services.act_on_fleet_breaker(
            name="search", action="reset", user=operator, source="t", reason="x" * 501, now=T0
        )


# -- pages --------------------------------------------------------------------------------


def test_pages_need_login_and_the_view_permission(client: Client) -> None:
    for url in ("/fleet/", "/fleet/instances/"):
        assert client.get(url).status_code == 302
    client.force_login(testing.make_user("nobody"))
    assert client.get("/fleet/").status_code == 403


def test_fleet_pages_list_instances_and_groups(client: Client, operator: Any) -> None:
    ingest(T0 + timedelta(days=3650))  # far in the future: live whatever the real time is
    client.force_login(operator)
    page = client.get("/fleet/").content.decode()
    assert 'data-fleet-breaker="search"' in page
    assert "tools@h1:42" in page
    assert "Force open" in page
    rows = client.get("/fleet/instances/?partial=1").content.decode()
    assert 'data-status="live"' in rows


def test_ui_action_needs_csrf_permission_and_a_reason_and_is_audited(operator: Any) -> None:
    ingest(T0 + timedelta(days=3650))
    url = "/fleet/breakers/search/force_open/"
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post(url, HTTP_HX_PROMPT="r").status_code == 403
    viewer = Client()
    viewer.force_login(testing.make_user("viewer", "dashboard.view_dashboard"))
    denied = viewer.post(url, HTTP_HX_PROMPT="r")
    assert denied.status_code == 403 and b"permission" in denied.content
    anonymous = Client().post(url, HTTP_HX_PROMPT="r")
    assert anonymous.status_code == 403 and b"session has ended" in anonymous.content
    ok = Client()
    ok.force_login(operator)
    assert ok.post(url).status_code == 400  # no reason
    assert ok.post("/fleet/breakers/nope/reset/", HTTP_HX_PROMPT="r").status_code == 404
    assert ok.post("/fleet/breakers/search/explode/", HTTP_HX_PROMPT="r").status_code == 404
    response = ok.post(url, HTTP_HX_PROMPT="drill")
    assert response.status_code == 202
    assert "Sent to 1 instance." in response.content.decode()
    entry = AuditEntry.objects.get(action="fleet.breaker.force_open")
    assert (entry.actor, entry.reason, entry.source) == ("olga", "drill", "dashboard")
    assert FleetCommand.objects.get().action == "force_open"


def test_ui_action_on_stale_instances_only_is_a_409() -> None:
    ingest(T0)  # long ago: stale or gone by now
    ingest(datetime.now(UTC) - timedelta(seconds=10))
    client = Client()
    client.force_login(
        testing.make_user("olga2", "dashboard.view_dashboard", "breakers.reset_breaker")
    )
    response = client.post("/fleet/breakers/search/reset/", HTTP_HX_PROMPT="r")
    assert response.status_code == 409
    assert "Sent to 0 instances; 1 unreachable" in response.content.decode()


def test_the_protocol_schema_is_served_behind_a_login(client: Client, operator: Any) -> None:
    assert client.get("/api/fleet/v1/schema.json").status_code == 302
    client.force_login(operator)
    schema = client.get("/api/fleet/v1/schema.json").json()
    assert set(schema["$defs"]) >= {"Report", "Answer", "Command", "Ack", "Instance"}


# -- run_agents ---------------------------------------------------------------------------


def test_run_agents_mints_a_token_and_runs_its_loop_until_stopped() -> None:
    import io
    import socket

    from django.core.management import call_command

    from dashboard.api.models import ApiToken
    from resilience.circuit_breaker import circuit_breaker_registry

    with socket.socket() as sock:  # a port nobody listens on: the dashboard is "down"
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    out = io.StringIO()
    call_command(
        "run_agents", "--service", "planner", "--url", url, "--seconds", "0.3", "--no-traces",
        "--no-workflows",  # the workflows run in a real worker: tests/fleet
        stdout=out,
    )  # fmt: skip
    assert "agent 'planner'" in out.getvalue() and "stopped after" in out.getvalue()
    assert {"llm-api", "search", "vector-db", "planner.tools"} <= set(
        circuit_breaker_registry.names()
    )
    token = ApiToken.objects.get(name="run_agents planner")
    assert token.user.has_perm("fleet.report_fleet")
    assert token.user.has_perm("traces.ingest_spans")  # the same token exports its spans


def test_fleet_settings_come_from_the_environment() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "SECRET_KEY": "x" * 50, "FLEET_STALE_AFTER": "2.5"}
    env.update(FLEET_GONE_AFTER="90", FLEET_COMMAND_TTL="7", FLEET_REPORT_INTERVAL="0.5")
    names = "s.FLEET_STALE_AFTER, s.FLEET_GONE_AFTER, s.FLEET_COMMAND_TTL, s.FLEET_REPORT_INTERVAL"
    code = f"import dashboard.settings as s; print({names})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.stdout.split() == ["2.5", "90.0", "7.0", "0.5"], done.stderr


def test_long_gone_instances_are_forgotten_when_a_new_one_announces(operator: Any) -> None:
    ingest(T0)
    services.act_on_fleet_breaker(name="search", action="reset", user=operator, source="t", now=T0)
    ingest(T0 + timedelta(hours=23), instance=report_body()["instance"] | {"id": "i-2"})
    assert FleetInstance.objects.count() == 2
    ingest(T0 + timedelta(hours=25), instance=report_body()["instance"] | {"id": "i-3"})
    assert sorted(FleetInstance.objects.values_list("instance_id", flat=True)) == ["i-2", "i-3"]
    assert not FleetCommand.objects.exists()


def test_a_redis_shared_breaker_is_acted_on_once(operator: Any) -> None:
    shared = {"name": "search", "state": "open", "shared": True, "redis_key": "rs:cb:search"}
    ingest(T0, breakers=[shared])
    ingest(T0, instance=report_body()["instance"] | {"id": "i-2"}, breakers=[shared])
    ingest(T0, instance=report_body()["instance"] | {"id": "i-3"})  # a local "search"
    result = services.act_on_fleet_breaker(
        name="search", action="reset", user=operator, source="t", now=T0
    )
    assert result["shared"] is True
    assert len(result["instances"]) == 2
    assert "i-3" in result["instances"]


def test_limiters_are_grouped_across_instances(client: Client, operator: Any) -> None:
    limiter = {"name": "llm", "kind": "bucket", "allowed": 10, "rejected": 2}
    ingest(T0 + timedelta(days=3650), limiters=[limiter | {"available_tokens": 1.5}])
    second = report_body()["instance"] | {"id": "i-2"}
    ingest(T0 + timedelta(days=3650), instance=second, limiters=[limiter | {"rejected": 0}])
    api = testing.bearer(testing.token_for(operator))
    (group,) = client.get(f"{API}/rate-limiters", **api).json()["items"]
    assert (group["name"], group["allowed"], group["rejected"]) == ("llm", 20, 2)
    assert sorted(i["available_tokens"] or 0 for i in group["instances"]) == [0, 1.5]
    client.force_login(operator)
    assert 'data-fleet-limiter="llm"' in client.get("/fleet/").content.decode()


@pytest.mark.django_db
def test_instances_seen_since_match_the_orm_query_in_its_order_without_limiters() -> None:
    def make(n: int, service: str, host: str, pid: int, seen: datetime) -> None:
        FleetInstance.objects.create(
            instance_id=f"i{n}", service=service, host=host, pid=pid, started_at=T0,
            first_seen=T0, last_seen=seen, breakers=[{"name": f"b{n}"}], limiters=[{"n": n}],
        )  # fmt: skip

    make(1, "b", "h", 2, T0)
    make(2, "a", "z", 1, T0 + timedelta(seconds=1))
    make(3, "a", "h", 9, T0)
    make(4, "a", "h", 3, T0 - timedelta(seconds=5))  # not after the threshold
    threshold = T0 - timedelta(seconds=1)
    for _ in range(2):  # compiled, then from the cache
        found = selectors._seen_since(threshold)
        expected = FleetInstance.objects.filter(last_seen__gt=threshold)
        assert [(i.instance_id, i.last_seen, i.breakers) for i in found] == [
            (i.instance_id, i.last_seen, i.breakers) for i in expected
        ]
        assert [i.instance_id for i in found] == ["i3", "i2", "i1"]
        assert all("limiters" in i.get_deferred_fields() for i in found)
    assert selectors._seen_since(T0 + timedelta(seconds=1)) == []
