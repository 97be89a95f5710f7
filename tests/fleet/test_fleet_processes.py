"""The fleet with real processes: a daphne server and two plain-Python workers.

Liveness thresholds are the server's (``FLEET_STALE_AFTER=3``, ``FLEET_GONE_AFTER=6``: far
above the workers' 0.2 s reports, so a loaded machine does not make a live worker look
stale); their exact boundaries are tested with an injected time in
tests/dashboard/fleet/test_fleet.py.
Here the tests only wait for states to be reached, never assert how long it took.
"""

from __future__ import annotations

from typing import Any

from tests.fleet.processes import Fleet, wait_until


def group(fleet: Fleet, name: str) -> dict[str, Any]:
    found: dict[str, Any] = fleet.api("GET", f"/circuit-breakers/{name}")
    return found


def test_a_breaker_only_in_workers_shows_and_a_reset_closes_it_in_each(fleet: Fleet) -> None:
    planner = fleet.worker("planner", "search", "planner-only")
    tools = fleet.worker("tools", "search")
    assert planner("fail search 2") == "open"
    assert planner("fail planner-only 2") == "open"

    def search_open_on_both() -> dict[str, Any] | None:
        found = group(fleet, "search")
        return found if len(found.get("instances", [])) == 2 and found["state"] == "open" else None

    found = wait_until(search_open_on_both)
    states = {row["instance"]: row["state"] for row in found["instances"]}
    assert states == {planner.instance: "open", tools.instance: "closed"}
    assert found["failures"] == 2
    assert wait_until(lambda: group(fleet, "planner-only").get("state") == "open")

    acted = fleet.api("POST", "/circuit-breakers/search/reset", {"reason": "upstream fixed"})
    assert sorted(acted["instances"]) == sorted([planner.instance, tools.instance])
    wait_until(lambda: planner("state search") == "closed")

    def applied() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = fleet.api("GET", f"/commands/{acted['batch']}")["items"]
        return rows if all(row["status"] == "applied" for row in rows) else None

    rows = wait_until(applied)
    assert {row["result_state"] for row in rows} == {"closed"}
    assert planner("state planner-only") == "open"  # only the named breaker was reset
    assert wait_until(lambda: group(fleet, "search").get("state") == "closed")

    forced = fleet.api("POST", "/circuit-breakers/search/force_open", {"instance": tools.instance})
    assert forced["instances"] == [tools.instance]
    wait_until(lambda: tools("state search") == "forced_open")
    assert planner("state search") == "closed"
    stats = planner("stats")
    assert stats["django"] is False and stats["errors"] == 0


def test_workers_keep_serving_while_the_dashboard_is_down_and_reconnect(fleet: Fleet) -> None:
    worker = fleet.worker("restart", "payments")
    wait_until(lambda: worker("stats")["connected"])
    fleet.server.stop()
    down = wait_until(lambda: (s := worker("stats"))["failed"] > 0 and not s["connected"] and s)
    wait_until(lambda: worker("stats")["served"] > down["served"] + 50)
    assert worker("fail payments 2") == "open"  # the transition waits in the worker
    assert worker("stats")["errors"] == 0

    fleet.server.start()
    wait_until(lambda: worker("stats")["connected"])
    assert wait_until(lambda: group(fleet, "payments").get("state") == "open")
    instance = fleet.instance(worker.instance)
    assert instance is not None and instance["status"] == "live"
    assert instance["reports_failed"] > 0  # the worker's own count, reported on return
    assert worker("stats")["errors"] == 0


def test_a_killed_worker_turns_stale_then_gone(fleet: Fleet) -> None:
    worker = fleet.worker("doomed", "doomed-breaker")
    assert wait_until(lambda: (fleet.instance(worker.instance) or {}).get("status") == "live")
    worker.kill()
    wait_until(lambda: (fleet.instance(worker.instance) or {}).get("status") == "stale")
    wait_until(lambda: (fleet.instance(worker.instance) or {}).get("status") == "gone")
    assert group(fleet, "doomed-breaker")["status"] == 404
