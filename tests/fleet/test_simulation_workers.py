"""`make run` as a real system: the Simulation page breaks a service in the worker that calls it.

A daphne server and a ``manage.py run_agents`` worker (its own process, its own fake
services, its own breakers); an operator logged in with a session sets ``payments`` to
``down`` on the Simulation page, and the worker's ``payments`` breaker opens, as the
fleet API reports it; back to ``default``, it closes again. SIGTERM (what `make run`
sends on Ctrl-C) stops the worker cleanly.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.fleet.processes import PASSWORD, ROOT, Fleet, running_fleet, wait_until

OPERATOR = """
import django, os
django.setup()
from dashboard.api import testing
testing.make_user(
    "sim-operator", "dashboard.view_dashboard", "workflows.operate_simulation",
    password=os.environ["FLEET_TEST_PASSWORD"],
)
"""
# Healthy and fast by default, so that only the operator's choice opens the breaker.
SERVICES = {name: {"latency_ms": 5.0} for name in ("search-api", "llm", "payments")}


class Browser:
    """A session like a browser's: cookies, the login form and CSRF tokens."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def _csrf(self) -> str:
        return next(cookie.value for cookie in self.jar if cookie.name == "csrftoken") or ""

    def get(self, path: str) -> str:
        with self.opener.open(f"{self.base}{path}", timeout=10) as reply:
            return str(reply.read().decode())

    def post(self, path: str, fields: dict[str, str], **headers: str) -> tuple[int, str]:
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": self._csrf()}).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, headers=headers)
        with self.opener.open(request, timeout=10) as reply:
            return reply.status, reply.read().decode()

    def login(self, username: str, password: str) -> None:
        self.get("/accounts/login/")
        status, body = self.post(
            "/accounts/login/", {"username": username, "password": password, "next": "/"}
        )
        assert status == 200 and "sim-operator" in body, body[:500]


def _worker_breaker(fleet: Fleet, name: str) -> dict[str, Any] | None:
    group = fleet.api("GET", f"/circuit-breakers/{name}")
    rows = [row for row in group.get("instances", []) if row["service"] == "planner"]
    return rows[0] if rows else None


def _state(fleet: Fleet, name: str) -> str:
    row = _worker_breaker(fleet, name)
    return "" if row is None else str(row["state"])


def test_a_pattern_set_on_the_page_opens_the_workers_breaker_and_clearing_it_closes_it(
    tmp_path: Path,
) -> None:
    services = tmp_path / "services.json"
    services.write_text(json.dumps(SERVICES))
    with running_fleet() as fleet:
        server = fleet.server
        made = subprocess.run(
            [sys.executable, "-c", OPERATOR], cwd=ROOT, env=server.env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        log = tmp_path / "worker.log"
        with log.open("wb") as output:
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "run_agents", "--service", "planner",
                 "--url", server.url, "--no-traces", "--rate", "5",
                 "--workflow-rate", "4", "--pattern-poll", "0.2"],
                cwd=ROOT, env={**server.env, "WORKFLOW_SERVICES_FILE": str(services)},
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            # The workflows run in the worker: its payments breaker is reported, closed.
            wait_until(lambda: _state(fleet, "payments") == "closed", timeout=60)

            browser = Browser(server.url)
            browser.login("sim-operator", PASSWORD)
            status, body = browser.post(
                "/simulation/pattern/",
                {"service": "payments", "pattern": "down", "reason": "game day"},
                **{"HX-Request": "true"},
            )
            assert status == 200 and "payments is now down." in body

            wait_until(lambda: _state(fleet, "payments") == "open", timeout=60)
            # The page says which worker applied the choice.
            panel = browser.get("/simulation/panel/")
            row = panel[panel.index('data-service="payments"') :]
            row = row[: row.index("</tr>")]
            assert re.search(r"planner@[^<]+:\d+", row), row
            assert 'data-fleet-state="open"' in row or 'data-fleet-state="half_open"' in row

            status, body = browser.post(
                "/simulation/pattern/",
                {"service": "payments", "pattern": "default"},
                **{"HX-Request": "true"},
            )
            assert status == 200
            wait_until(lambda: _state(fleet, "payments") == "closed", timeout=60)
            # The other services were never touched: their breakers stayed closed.
            assert _state(fleet, "search-api") in ("closed", "")

            worker.send_signal(signal.SIGTERM)  # what `make run` sends on Ctrl-C
            assert worker.wait(60) == 0, log.read_text(errors="replace")[-3000:]
            assert "agent 'planner' stopped after" in log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)


def test_make_run_leaves_the_workload_to_the_workers_unless_it_starts_none() -> None:
    def recipe(*args: str) -> str:
        done = subprocess.run(
            ["make", "-n", "run", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    with_workers = recipe()
    assert "RESILIENCE_DEMO=${RESILIENCE_DEMO:-0}" in with_workers
    assert "manage.py run_agents" in with_workers and "for agent in planner tools" in with_workers
    assert "RESILIENCE_DEMO=${RESILIENCE_DEMO:-1}" in recipe("AGENTS=")
