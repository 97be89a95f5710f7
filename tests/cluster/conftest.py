"""Real servers for the cluster tests: one redis-server, three daphne processes.

The processes are started fresh (``python -m daphne``, not forked from pytest), each
configured by the environment like a deployment: ``REDIS_URL`` (cluster mode), one
shared database (a SQLite file here, or a new database on the PostgreSQL server of
``DATABASE_URL`` when that is set), ``tests.cluster.control`` as the ASGI entry so the
test can drive breakers inside each process. Without redis-server (or chromium, for
the browser test) the tests skip, but fail when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.resilience.redis_server import RedisServer, free_port, redis_server_path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-for-cluster-tests-123"
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


def missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing and CI=true: the cluster tests must run")
    pytest.skip(f"{what} is missing (make system-deps installs it)")


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


class Server:
    """One daphne process of the cluster, with its control connection."""

    def __init__(self, label: str, env: dict[str, str], logs: Path) -> None:
        self.label = label
        self.port = free_port()
        self.control_port = free_port()
        self.log = logs / f"server-{label}.log"
        with self.log.open("wb") as output:  # the child keeps its own descriptor
            self.process = self._start(env, output)
        self._sock: socket.socket | None = None
        self._file: Any = None

    def _start(self, env: dict[str, str], output: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "tests.cluster.control:application"],
            cwd=ROOT,
            env={**env, "CLUSTER_CONTROL_PORT": str(self.control_port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server {self.label} exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=1) as reply:
                if reply.status != 200:
                    return False
            self._sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=15)
        except OSError:
            return False
        self._file = self._sock.makefile("rwb")
        return True

    def __call__(self, *command: Any) -> Any:
        """Run a control command in this process; its result."""
        if self._file is None:
            raise RuntimeError(f"server {self.label} is not ready")
        self._file.write(json.dumps(command).encode() + b"\n")
        self._file.flush()
        reply = json.loads(self._file.readline())
        if "error" in reply:
            raise AssertionError(f"{self.label}: {command!r} failed: {reply['error']}")
        return reply["ok"]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Database:
    """A database of the cluster's own: a SQLite file, or a new PostgreSQL database."""

    def __init__(self, directory: Path) -> None:
        base = os.environ.get("DATABASE_URL", "")
        self.admin_url: str | None = None
        self.name = f"cluster_{uuid.uuid4().hex[:10]}"
        if base.startswith(("postgres://", "postgresql://")):
            parts = urlsplit(base)
            self.admin_url = base
            self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
            self._admin(f'CREATE DATABASE "{self.name}"')
        else:
            self.url = f"sqlite:///{directory / 'cluster.sqlite3'}"

    def _admin(self, sql: str) -> None:
        import psycopg

        assert self.admin_url is not None
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def drop(self) -> None:
        if self.admin_url is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Cluster:
    def __init__(self, redis: RedisServer, servers: list[Server]) -> None:
        self.redis = redis
        self.servers = servers
        self.token = ""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    binary = redis_server_path()
    if binary is None:
        missing("redis-server")
    directory = Path(tempfile.mkdtemp(prefix="resilience-cluster-"))
    database = Database(directory)
    redis = RedisServer(binary)
    servers: list[Server] = []
    try:
        redis.start()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": database.url,
            "REDIS_URL": redis.url,
            "SECRET_KEY": "cluster-tests-" + uuid.uuid4().hex,
            "RESILIENCE_DEMO": "0",
            "ALERTS_ENABLED": "0",
            "CLUSTER_SAMPLER_INTERVAL": "3600",
            "DEBUG": "0",
            "PYTHONPATH": str(ROOT),
        }
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        servers = [Server(label, env, directory) for label in "ABC"]
        for server in servers:
            wait_until(server.ready, timeout=45, interval=0.1)
        cluster = Cluster(redis, servers)
        cluster.token = servers[0](
            "user", "operator", PASSWORD, ["view_dashboard", "reset_breaker", "operate_breaker"]
        )
        yield cluster
    finally:
        for server in servers:
            server.stop()
        redis.stop()
        database.drop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def browser_page(cluster: Cluster) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (Python)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(10_000)
            yield page
        finally:
            browser.close()
