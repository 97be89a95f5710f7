"""A live daphne server in a child process, driven by a real Chromium through Playwright.

The server process also runs a small *test-only* control thread: the test sends it
commands over a multiprocessing pipe (register a breaker, make calls fail, ...) so
breakers change state inside the process that holds them, as in production. Nothing
of this lives in the application: it exists only in this fixture.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from daphne.testing import DaphneProcess

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
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "pw-for-browser-tests-123"


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing and CI=true: browser tests must run (make system-deps)")
    pytest.skip(f"{what} is missing (make system-deps installs it)")


# -- the server process ------------------------------------------------------------


class BadFailure(Exception):
    pass


def _fail() -> None:
    raise BadFailure("upstream returned 503")


def _run_command(command: tuple[Any, ...]) -> Any:
    from resilience import telemetry
    from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

    kind, name, *args = command
    if kind == "breaker":
        breaker = circuit_breaker_registry.get_or_create(name, CircuitBreakerConfig(**args[0]))
        return breaker.state.value
    existing = circuit_breaker_registry.get(name)
    if existing is None:
        raise LookupError(f"no breaker {name!r}: send ('breaker', name, config) first")
    breaker = existing
    if kind == "fail":
        for _ in range(args[0]):
            with contextlib.suppress(Exception):
                breaker.call(_fail)
        return breaker.state.value
    if kind == "state":
        return breaker.state.value
    if kind == "count":
        telemetry.metrics.increment_counter(name, args[0])
        return None
    raise ValueError(f"unknown command {kind!r}")


def _serve_commands(control: Connection) -> None:
    while True:
        try:
            command = control.recv()
        except EOFError:
            return
        try:
            control.send(("ok", _run_command(command)))
        except Exception as exc:  # reported to the test, which fails with it
            control.send(("error", repr(exc)))


def _background_load() -> None:
    from resilience import telemetry

    rng = random.Random(3)
    while True:
        time.sleep(0.1)
        telemetry.metrics.increment_counter("browser.requests")
        telemetry.metrics.record_histogram("browser.latency_ms", rng.uniform(5, 50))


@pytest.fixture(autouse=True)
def dashboard_runtime() -> Iterator[None]:
    """A runtime in this (parent) process per test, as a server has one: its span
    pipeline owns the global TracerProvider before a test runs workflows here, and the
    server forked from here starts its own (``ServerProcess._setup``)."""
    from dashboard import runtime

    runtime.start(runtime.Features(live=False))
    yield
    runtime.stop()


class ServerProcess(DaphneProcess):  # type: ignore[misc]
    def __init__(self, host: str, control: Connection, port: int = 0) -> None:
        super().__init__(host, _application, setup=self._setup, port=port)
        self.control = control

    def run(self) -> None:
        # A forked child inherits asgiref's executor without its thread; every
        # sync_to_async would then hang (asgiref#194). Start from fresh ones.
        from concurrent.futures import ThreadPoolExecutor

        from asgiref.sync import AsyncToSync, SyncToAsync

        SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
        AsyncToSync.loop_thread_executors.clear()
        super().run()

    def _setup(self) -> None:
        from channels.testing.live import set_database_connection

        set_database_connection()
        # The server's start: a fresh runtime in this child (the listeners of the test
        # runtime it was forked from are dropped), without retention deleting test rows.
        from dashboard import runtime

        runtime.start(runtime.Features.from_settings(retention=False))
        threading.Thread(target=_serve_commands, args=(self.control,), daemon=True).start()
        threading.Thread(target=_background_load, daemon=True).start()


def _application() -> Any:
    from dashboard.asgi import application

    return application


class LiveServer:
    """The daphne child process, restartable on the same port."""

    def __init__(self) -> None:
        self.host = "localhost"
        self.port = 0
        self.process: ServerProcess | None = None
        self._control: Connection | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        from django.db import connections

        connections.close_all()  # the child must not share the parent's sqlite handles
        ours, theirs = Pipe()
        process = ServerProcess("127.0.0.1", theirs, port=self.port)
        process.start()
        if not process.ready.wait(timeout=15):
            process.terminate()
            raise RuntimeError("daphne did not start")
        self.process, self._control, self.port = process, ours, process.port.value

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.join(5)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, *command: Any) -> Any:
        if self._control is None:
            raise RuntimeError("server not started")
        self._control.send(command)
        if not self._control.poll(10):
            raise TimeoutError(f"server did not answer {command!r}")
        status, value = self._control.recv()
        if status != "ok":
            raise AssertionError(f"server command {command!r} failed: {value}")
        return value


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def operator(transactional_db: None) -> str:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("operator", password=PASSWORD, first_name="Olga")
    for codename in ("view_dashboard", "reset_breaker", "operate_breaker"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user.username


@pytest.fixture
def daphne_server(operator: str, django_db_blocker: Any) -> Iterator[LiveServer]:
    server = LiveServer()
    with django_db_blocker.unblock():
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page(daphne_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (Python)")
    # Sync Playwright runs an event loop in this thread: Django's ORM refuses to run
    # under it unless told otherwise, for as long as the browser is open.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(10_000)
            yield page
        finally:
            # A server (re)started while the browser was open was forked with the
            # Playwright driver's pipes: stop it first, or closing Playwright waits forever.
            daphne_server.stop()
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    # An artifact, not an assertion: a live chart repaints every second, so give a busy
    # machine time for a stable frame.
    page.screenshot(path=str(path), full_page=True, animations="disabled", timeout=30_000)
    return path


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)
