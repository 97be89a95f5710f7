"""A real server under the demo load, and the real Prometheus tools that read it.

The server is started fresh (``python -m daphne``) as an operator would run it:
``DEBUG`` off, ``collectstatic`` into a ``STATIC_ROOT`` (whitenoise's compressed, hashed
files), the demo workload on, a SQLite database of its own. Without Debian's
``prometheus`` package (``make system-deps``) the tests skip, but fail when CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing and CI=true: the Prometheus tests must run")
    pytest.skip(f"{what} is missing (make system-deps installs Debian's prometheus)")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(name)
    assert path is not None
    return path


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class DemoServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    static_root: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def scrape(self) -> str:
        status, _, body = get(f"{self.url}/metrics")
        assert status == 200, (status, body[:200])
        return body.decode()


def _demo_running(server: DemoServer) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"the server exited:\n{server.tail()}")
    try:
        body = server.scrape()
    except (OSError, AssertionError):
        return False
    # The demo has run workflows through breakers (call durations) and finished some.
    return (
        "resilience4j_circuitbreaker_calls_seconds_count" in body
        and re.search(r"^workflow_runs_total\{", body, re.M) is not None
    )


@pytest.fixture(scope="session")
def demo_server() -> Iterator[DemoServer]:
    directory = Path(tempfile.mkdtemp(prefix="resilience-ops-"))
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "SECRET_KEY": "ops-tests-" + uuid.uuid4().hex,
        "DEBUG": "0",
        "STATIC_ROOT": str(directory / "static"),
        "MEDIA_ROOT": str(directory / "media"),
        "RESILIENCE_DEMO": "1",
        "WORKFLOW_DEMO_RATE": "4",
        "ALERTS_ENABLED": "0",
        "OTEL_SERVICE_NAME": "ops-test",
        # Retention every second, keeping 2 per agent and workflow, none older than 5 s.
        "CHECKPOINT_CLEANUP_INTERVAL": "1",
        "CHECKPOINT_KEEP_LAST": "2",
        "CHECKPOINT_MAX_AGE": "5s",
        "PYTHONPATH": str(ROOT),
    }
    log = directory / "server.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "dashboard.asgi:application"],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = DemoServer(f"http://127.0.0.1:{port}", port, process, log, directory / "static")
        wait_until(lambda: _demo_running(server), 90, "the demo's metrics on /metrics")
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
