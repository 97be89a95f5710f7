"""The worker's side of the fleet over Redis, against a real redis-server (no Django).

The keys are the protocol's constants, so each test starts by deleting them. Tests that
start the reporter's threads wait for a condition (never for an amount of time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import resilience.fleet as fleet
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
)
from resilience.events import EventBus
from resilience.fleet import FleetReporter, HttpTransport, TransportError, instance_info
from resilience.fleet.protocol import (
    REDIS_ANSWER_FIELD,
    REDIS_REPORTS_KEY,
    redis_commands_key,
)
from resilience.fleet.redis_transport import RedisTransport
from tests.resilience._fleet_fixtures import command, empty_registries, make, open_breaker  # noqa: F401
from tests.resilience._redis_fixtures import fresh_server, redis_server  # noqa: F401
from tests.resilience.redis_server import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:  # noqa: F811
    client = redis.Redis.from_url(redis_server.url)
    client.delete(REDIS_REPORTS_KEY)
    yield client
    client.close()


def reports(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"report"]) for _id, fields in client.xrange(REDIS_REPORTS_KEY)]


def push(client: redis.Redis, instance_id: str, answer: object) -> None:
    body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    client.xadd(redis_commands_key(instance_id), {REDIS_ANSWER_FIELD: body})


def answer(command_id: str, target: str, action: str = "reset") -> dict[str, Any]:
    return {"protocol": 1, "commands": [command(action, target, command_id)]}


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)
    return value


def test_a_report_is_one_entry_of_the_reports_stream(
    client: redis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    CircuitBreaker("payments", CircuitBreakerConfig())
    reporter = make(RedisTransport(redis_server.url))
    assert reporter.report_once() and reporter.connected
    (report,) = reports(client)
    assert set(fleet.schema()["$defs"]["Report"]["required"]) <= set(report)
    assert report["instance"]["id"] == reporter.instance["id"]
    assert [b["name"] for b in report["breakers"]] == ["payments"]


def test_receive_returns_pushed_answers_once_in_order_and_skips_garbage(
    client: redis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    transport = RedisTransport(redis_server.url)
    assert transport.receive("i-recv", 0.01) == []
    push(client, "i-recv", {"protocol": 1, "commands": [command(target="a", command_id="c1")]})
    push(client, "i-recv", b"not json")
    push(client, "i-recv", b"[1, 2]")
    push(client, "i-recv", {"protocol": 1, "commands": [command(target="b", command_id="c2")]})
    client.xadd(redis_commands_key("i-recv"), {"other": "x"})
    answers = transport.receive("i-recv", 0.01)
    assert [a["commands"][0]["id"] for a in answers] == ["c1", "c2"]
    assert transport.receive("i-recv", 0.01) == []  # read from the last id on
    other = RedisTransport(redis_server.url)
    assert len(other.receive("i-recv", 0.01)) == 2  # a new reader starts at the beginning


def test_a_pushed_command_is_applied_and_acked_in_the_next_report(
    client: redis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    breaker = open_breaker("search")
    reporter = make(RedisTransport(redis_server.url), interval=60.0).start()
    try:
        wait_until(lambda: reports(client))  # the first report, then 60 s of quiet
        push(client, reporter.instance["id"], answer("c1", "search"))
        acks = wait_until(lambda: [a for r in reports(client) for a in r["acks"]])
    finally:
        reporter.stop()
    assert breaker.state.value == "closed"
    assert acks[0]["command_id"] == "c1" and acks[0]["ok"] and acks[0]["state"] == "closed"
    assert reporter.commands_applied == 1


def test_a_command_pushed_twice_is_applied_once_and_acked_with_its_first_result(
    client: redis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    breaker = open_breaker("search")
    transport = RedisTransport(redis_server.url)
    reporter = make(transport)
    twice = answer("c1", "search")
    reporter._pushed.extend([twice, twice])
    assert reporter.report_once()
    breaker.force_open()
    push(client, reporter.instance["id"], twice)
    reporter._pushed.extend(transport.receive(reporter.instance["id"], 0.01))
    assert reporter.report_once()
    assert breaker.state.value == "forced_open"  # the repeat was not applied again
    acks = [a for r in reports(client) for a in r["acks"]]
    assert [a["state"] for a in acks] == ["closed", "closed", "closed"]
    assert reporter.commands_applied == 1


def test_redis_down_never_raises_counts_and_the_worker_catches_up_after_a_restart(
    fresh_server: RedisServer,  # noqa: F811
) -> None:
    breaker = open_breaker("db")
    bus = EventBus()
    transport = RedisTransport(fresh_server.url, timeout=0.5)
    reporter = FleetReporter(transport, instance=instance_info(service="planner"), event_bus=bus)
    bus.subscribe(reporter._on_event)
    breaker.add_listener(bus.publish)
    assert reporter.report_once()
    fresh_server.kill()
    breaker.reset()  # a transition while Redis is down waits in the worker
    assert not reporter.report_once()
    assert not reporter.report_once()
    assert (reporter.reports_failed, reporter.connected) == (2, False)
    assert "redis unreachable" in (reporter.last_error or "")
    with pytest.raises(TransportError):
        transport.receive(reporter.instance["id"], 0.01)

    fresh_server.start()  # empty: nothing survived
    assert reporter.report_once() and reporter.connected
    client = redis.Redis.from_url(fresh_server.url)
    (report,) = reports(client)
    assert [(e["name"], e["to_state"]) for e in report["events"]] == [("db", "closed")]
    assert report["stats"]["reports_failed"] == 2
    push(client, reporter.instance["id"], answer("c9", "db", "disable"))
    assert [a["commands"][0]["id"] for a in transport.receive(reporter.instance["id"], 0.01)] == [
        "c9"
    ]
    client.close()


def test_the_listener_thread_survives_redis_going_away_and_coming_back(
    fresh_server: RedisServer,  # noqa: F811
) -> None:
    breaker = open_breaker("search")
    reporter = make(RedisTransport(fresh_server.url, timeout=0.5), max_backoff=0.5).start()
    try:
        wait_until(lambda: reporter.connected)
        fresh_server.kill()
        wait_until(lambda: reporter.reports_failed > 0 or reporter.failures > 0)
        fresh_server.start()
        wait_until(lambda: reporter.connected)
        client = redis.Redis.from_url(fresh_server.url)
        push(client, reporter.instance["id"], answer("c2", "search"))
        wait_until(lambda: breaker.state.value == "closed")
        client.close()
    finally:
        reporter.stop()
    assert reporter.running is False


def test_connect_picks_redis_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("RESILIENCE_DASHBOARD_URL", "http://127.0.0.1:1")
    reporter = fleet.connect(redis_url=redis_server.url, service="a")
    assert reporter is not None and isinstance(reporter.transport, RedisTransport)
    fleet.disconnect(timeout=2)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    reporter = fleet.connect(service="b")  # REDIS_URL wins over the dashboard URL
    assert reporter is not None and isinstance(reporter.transport, RedisTransport)
    fleet.disconnect(timeout=2)
    reporter = fleet.connect("http://127.0.0.1:1", service="c")  # an explicit URL: HTTP
    assert reporter is not None and isinstance(reporter.transport, HttpTransport)
    fleet.disconnect(timeout=2)
    assert fleet.RedisTransport is RedisTransport


@pytest.mark.parametrize("url", ["http://x", "", "redis", "localhost:6379"])
def test_a_redis_url_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="redis url"):
        RedisTransport(url)
    with pytest.raises(ValueError, match="redis url"):
        fleet.connect(redis_url=url)


def test_a_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        RedisTransport("redis://127.0.0.1:1/0", timeout=0)
