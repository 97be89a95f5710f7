"""The fleet over Redis with real processes: a daphne server in cluster mode (REDIS_URL),
plain-Python workers reporting through the same redis-server, which the test restarts.

As in test_fleet_processes.py the tests wait for states, never assert how long it took
(the latency is measured in ``python -m bench fleet``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet.processes import Fleet, Worker, running_fleet, wait_until
from tests.resilience._redis_fixtures import require_redis_server
from tests.resilience.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_fleet() -> Iterator[tuple[Fleet, RedisServer]]:
    server = RedisServer(require_redis_server()).start()
    try:
        with running_fleet(REDIS_URL=server.url) as fleet:
            yield fleet, server
    finally:
        server.stop()


def group(fleet: Fleet, name: str) -> dict[str, Any]:
    found: dict[str, Any] = fleet.api("GET", f"/circuit-breakers/{name}")
    return found


def applied(fleet: Fleet, batch: str) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = fleet.api("GET", f"/commands/{batch}")["items"]
    return rows if rows and all(row["status"] == "applied" for row in rows) else None


def test_two_redis_workers_show_and_a_reset_reaches_both(
    redis_fleet: tuple[Fleet, RedisServer],
) -> None:
    fleet, _redis = redis_fleet
    planner = fleet.worker("planner", "search")
    tools = fleet.worker("tools", "search")
    assert planner("stats")["transport"] == "RedisTransport"
    assert planner("fail search 2") == "open"
    assert tools("fail search 2") == "open"

    def open_on_both() -> dict[str, Any] | None:
        found = group(fleet, "search")
        states = [row["state"] for row in found.get("instances", [])]
        return found if states == ["open", "open"] else None

    wait_until(open_on_both)
    instances = {row["id"]: row for row in fleet.api("GET", "/instances")["items"]}
    assert {instances[planner.instance]["transport"], instances[tools.instance]["transport"]} == {
        "redis"
    }

    acted = fleet.api("POST", "/circuit-breakers/search/reset", {"reason": "upstream fixed"})
    assert sorted(acted["instances"]) == sorted([planner.instance, tools.instance])
    rows = wait_until(lambda: applied(fleet, acted["batch"]))
    assert {row["result_state"] for row in rows} == {"closed"}
    assert planner("state search") == "closed" and tools("state search") == "closed"
    assert wait_until(lambda: group(fleet, "search").get("state") == "closed")
    assert planner("stats")["django"] is False


def test_a_worker_survives_a_redis_restart_and_is_steerable_again(
    redis_fleet: tuple[Fleet, RedisServer],
) -> None:
    fleet, redis = redis_fleet
    worker = fleet.worker("restart", "payments")
    wait_until(lambda: (fleet.instance(worker.instance) or {}).get("status") == "live")
    redis.kill()
    down = wait_until(lambda: (s := worker("stats"))["failed"] > 0 and not s["connected"] and s)
    wait_until(lambda: worker("stats")["served"] > down["served"] + 50)  # still serving
    assert worker("fail payments 2") == "open"  # the transition waits in the worker
    assert worker("stats")["errors"] == 0

    redis.start()  # empty: the server re-creates its consumer group
    wait_until(lambda: worker("stats")["connected"])
    assert wait_until(lambda: group(fleet, "payments").get("state") == "open", timeout=30)
    acted = fleet.api("POST", "/circuit-breakers/payments/reset", {"reason": "back"})
    assert acted["instances"] == [worker.instance]
    wait_until(lambda: applied(fleet, acted["batch"]))
    assert worker("state payments") == "closed"
    assert worker("stats")["errors"] == 0


def test_an_http_worker_of_a_cluster_gets_its_command_through_the_long_poll(
    redis_fleet: tuple[Fleet, RedisServer],
) -> None:
    fleet, _redis = redis_fleet
    env = {key: value for key, value in fleet.worker_env.items() if key != "REDIS_URL"}
    worker = Worker("http-in-cluster", env, ["billing"])
    fleet.workers.append(worker)
    assert worker("stats")["transport"] == "HttpTransport"
    assert worker("fail billing 2") == "open"  # a transition is reported at once
    wait_until(lambda: group(fleet, "billing").get("state") == "open")
    acted = fleet.api("POST", "/circuit-breakers/billing/reset", {"reason": "paid"})
    assert acted["instances"] == [worker.instance]
    wait_until(lambda: worker("state billing") == "closed")
    wait_until(lambda: applied(fleet, acted["batch"]))
    assert worker("stats")["pushed"] >= 1  # it came through the long-poll (channels-redis)
