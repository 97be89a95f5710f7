"""A real fleet: a daphne server and worker processes, each a fresh ``python`` process.

Used by the fleet tests (``conftest.py``) and by ``python -m bench fleet``.

The server is configured by the environment like a deployment (its own SQLite file,
short ``FLEET_STALE_AFTER``/``FLEET_GONE_AFTER`` so a killed worker turns stale and
gone within seconds); the workers are ``tests/fleet/worker.py``, plain Python that
imports only ``resilience`` and joins with ``resilience.fleet.connect()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.resilience.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-for-fleet-tests-123"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

SETUP = """
import django, json, os
django.setup()
PASSWORD = os.environ["FLEET_TEST_PASSWORD"]
from dashboard.api import testing
reporter = testing.make_user("fleet-agent", "fleet.report_fleet")
operator = testing.make_user(
    "operator", "dashboard.view_dashboard", "breakers.reset_breaker", "breakers.operate_breaker",
    password=PASSWORD,
)
print(json.dumps({"report": testing.token_for(reporter), "operator": testing.token_for(operator)}))
"""


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


class Server:
    """``python -m daphne`` on a fixed port, stoppable and restartable."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log = logs / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 "dashboard.asgi:application"],
                cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._ready, timeout=45, interval=0.1)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


class Worker:
    """``tests/fleet/worker.py``: answers one JSON line per command line."""

    def __init__(self, service: str, env: dict[str, str], breakers: list[str]) -> None:
        self.service = service
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fleet" / "worker.py"), *breakers],
            cwd=ROOT, env={**env, "RESILIENCE_SERVICE_NAME": service},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.instance: str = self._read()["instance"]

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.service} exited ({self.process.poll()})")
        return json.loads(line)

    def __call__(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class Fleet:
    def __init__(self, server: Server, worker_env: dict[str, str], tokens: dict[str, str]):
        self.server = server
        self.worker_env = worker_env
        self.tokens = tokens
        self.workers: list[Worker] = []

    def worker(self, service: str, *breakers: str) -> Worker:
        worker = Worker(service, self.worker_env, list(breakers))
        self.workers.append(worker)
        return worker

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.server.url}/api/observability/fleet{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.tokens['operator']}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "detail": exc.read().decode()}

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        items = self.api("GET", "/instances").get("items", [])
        return next((row for row in items if row["id"] == instance_id), None)


@contextlib.contextmanager
def running_fleet(**extra_env: str) -> Iterator[Fleet]:
    """Migrate a fresh database, mint tokens, start the server; stop all on exit.

    With ``REDIS_URL`` in ``extra_env`` the server runs in cluster mode and the workers
    report through that Redis (the fleet's Redis transport).
    """
    directory = Path(tempfile.mkdtemp(prefix="resilience-fleet-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "DATABASE_URL": f"sqlite:///{directory / 'fleet.sqlite3'}",
        "SECRET_KEY": "fleet-tests-" + uuid.uuid4().hex,
        "RESILIENCE_DEMO": "0",
        "ALERTS_ENABLED": "0",
        "TRACES_ENABLED": "0",
        "API_RATE_LIMIT": "",
        "FLEET_STALE_AFTER": "3",
        "FLEET_GONE_AFTER": "6",
        "DEBUG": "0",
        "PYTHONPATH": str(ROOT),
        "FLEET_TEST_PASSWORD": PASSWORD,
        **extra_env,
    }
    if "REDIS_URL" not in extra_env:
        env.pop("REDIS_URL", None)
    server = Server(env, directory)
    fleet: Fleet | None = None
    try:
        for step in (["manage.py", "migrate", "--noinput"], ["-c", SETUP]):
            done = subprocess.run(
                [sys.executable, *step], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        tokens = json.loads(done.stdout.strip().splitlines()[-1])
        server.start()
        worker_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO", "RESILIENCE_"))
        }
        worker_env.update(
            {k: v for k, v in extra_env.items() if k.startswith("WORKER_")},
            PYTHONPATH=str(ROOT),
            RESILIENCE_DASHBOARD_URL=server.url,
            RESILIENCE_DASHBOARD_TOKEN=tokens["report"],
        )
        # The workers' transport: Redis when the server has REDIS_URL, else HTTP.
        worker_env.pop("REDIS_URL", None)
        if "REDIS_URL" in extra_env:
            worker_env["REDIS_URL"] = extra_env["REDIS_URL"]
        fleet = Fleet(server, worker_env, tokens)
        yield fleet
    finally:
        if fleet is not None:
            for worker in fleet.workers:
                worker.kill()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
