"""A workflow killed mid-run with its server (SIGKILL) resumes from its latest checkpoint.

Real processes: a daphne server on a free port, with its own SQLite database and
MEDIA_ROOT, is killed while a workflow executes; a second server on the same data
executes the workflow again, which resumes from the checkpoint instead of step 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = "killed-1"

SETUP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from dashboard.api.testing import make_user, token_for
user = make_user("runner", "dashboard.view_dashboard", "workflows.execute_workflow")
print(token_for(user))
"""

SERVE = """
import sys
import django
django.setup()
from django.conf import settings
from daphne.cli import CommandLineInterface
CommandLineInterface().run(["-b", "127.0.0.1", "-p", sys.argv[1], "dashboard.asgi:application"])
"""


def _env(tmp: Path, services: dict[str, Any]) -> dict[str, str]:
    services_file = tmp / f"services-{len(list(tmp.glob('services-*')))}.json"
    services_file.write_text(json.dumps(services))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WORKFLOW_", "DATABASE_URL", "PYTEST_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        MEDIA_ROOT=str(tmp / "media"),
        SECRET_KEY="kill-test-secret-key-" + "x" * 40,  # same key: checkpoints verify
        RESILIENCE_DEMO="0",
        WORKFLOW_SERVICES_FILE=str(services_file),
        WORKFLOW_CHECKPOINT_INTERVAL="2",
        PYTHONPATH=str(ROOT),
    )
    return env


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start")

    def request(self, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_a_workflow_killed_with_its_server_resumes_from_its_latest_checkpoint(
    tmp_path: Path, servers: list[Server]
) -> None:
    slow = {name: {"latency_ms": 250} for name in ("search-api", "llm", "payments")}
    env = _env(tmp_path, slow)
    setup = subprocess.run(
        [sys.executable, "-c", SETUP], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stderr
    token = setup.stdout.strip().splitlines()[-1]

    first = Server(env, tmp_path / "server-1.log")
    servers.append(first)
    answered: list[object] = []

    def execute() -> None:  # its answer never comes: the server dies first
        try:
            answered.append(first.request("POST", f"/api/workflows/{WORKFLOW}/execute", token))
        except OSError as exc:
            answered.append(exc)

    caller = threading.Thread(target=execute, daemon=True)
    caller.start()
    progress: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, progress = first.request("GET", f"/api/workflows/{WORKFLOW}", token)
        if status == 200 and progress["step"] >= 5:
            break
        time.sleep(0.05)
    assert progress.get("status") == "running" and progress["step"] >= 5, progress
    checkpoint_before_kill = progress["checkpoint_id"]
    assert checkpoint_before_kill
    first.kill()
    caller.join(10)
    assert len(answered) == 1 and isinstance(answered[0], OSError), answered

    fast = {name: {"latency_ms": 5} for name in ("search-api", "llm", "payments")}
    second = Server(_env(tmp_path, fast), tmp_path / "server-2.log")
    servers.append(second)
    status, run = second.request("POST", f"/api/workflows/{WORKFLOW}/execute", token)
    assert status == 200, run
    assert run["status"] == "succeeded"
    assert run["step"] == run["total_steps"] == 12
    assert run["start_step"] >= 4, run  # resumed, not started over at step 0
    assert run["resumed_from"] is not None
    assert run["resumed_from"] >= checkpoint_before_kill  # ids sort by time
    status, workflow = second.request("GET", f"/api/workflows/{WORKFLOW}", token)
    assert [r["status"] for r in workflow["runs"]] == ["succeeded", "interrupted"]
    assert workflow["runs"][1]["step"] >= 5
