"""Cluster mode end to end: three daphne processes (A, B, C) sharing one Redis and one
database act as one system — breaker state, operator actions, history, live pages."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from dashboard.live.templatetags.live import dom_id

from .conftest import PASSWORD, Cluster, wait_until

CONFIG = {"failure_threshold": 3, "timeout": 120}


def api_reset(cluster: Cluster, server_url: str, name: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server_url}/api/observability/circuit-breakers/{name}/reset",
        data=json.dumps({"reason": "dependency fixed"}).encode(),
        headers={"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
        body: dict[str, Any] = json.loads(reply.read())
        return body


def history(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    for server in cluster.servers:
        assert server("flush") is True
    rows: list[dict[str, Any]] = cluster.servers[0]("events", name)
    return rows


def test_a_breaker_opened_in_a_rejects_in_b_and_an_api_reset_in_c_closes_it_everywhere(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.servers
    name = "cluster.payments"
    for server in (a, b, c):
        assert server("breaker", name, CONFIG) == {
            "class": "RedisCircuitBreaker",
            "state": "closed",
        }
    assert {server("pid") for server in (a, b, c)}.__len__() == 3

    assert a("fail", name, 3) == "open"
    wait_until(lambda: b("state", name) == "open", timeout=2)
    assert b("call", name) == "rejected"

    snapshot = api_reset(cluster, c.url, name)
    assert snapshot["state"] == "closed"
    wait_until(lambda: a("state", name) == "closed" and b("state", name) == "closed", timeout=2)
    assert a("call", name) == "ok" and b("call", name) == "ok"

    # Every process saw both transitions; each is in the history once, by its maker.
    rows = wait_until(lambda: len(history(cluster, name)) >= 2 and history(cluster, name))
    time.sleep(0.3)  # a duplicate row, if any process wrote one, would land by now
    rows = history(cluster, name)
    assert [(row["from"], row["to"]) for row in rows] == [("closed", "open"), ("open", "closed")]
    assert rows[0]["reason"] == "failure_threshold reached (3 consecutive failures)"
    assert rows[1]["reason"].startswith("manual reset")
    assert rows[0]["process"].endswith(f":{a('pid')}")
    assert rows[1]["process"].endswith(f":{c('pid')}")


def test_a_browser_on_a_sees_a_transition_made_in_b_without_reload(
    cluster: Cluster, browser_page: Any
) -> None:
    a, b, _ = cluster.servers
    name = "cluster.search"
    for server in (a, b):
        assert server("breaker", name, CONFIG)["state"] == "closed"
    page = browser_page
    page.goto(f"{a.url}/accounts/login/")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{a.url}/")
    page.goto(f"{a.url}/breakers/")
    page.wait_for_selector('#live-status[data-status="live"]')
    state = f"#{dom_id(name)}-state"
    page.wait_for_selector(f'{state}[data-state="closed"]')
    page.evaluate("window.__sameDocument = true")

    # Pushed by A when it observes B's transition through Redis (the servers' sampler,
    # which would also refresh the card within its 1 s tick, is slowed down to an hour).
    assert b("fail", name, 3) == "open"
    page.wait_for_selector(f'{state}[data-state="open"]', timeout=3_000)
    assert page.evaluate("window.__sameDocument") is True  # no reload

    rows = wait_until(lambda: history(cluster, name), timeout=3)
    time.sleep(0.3)
    rows = history(cluster, name)
    assert [(row["from"], row["to"]) for row in rows] == [("closed", "open")]
    assert rows[0]["process"].endswith(f":{b('pid')}")
