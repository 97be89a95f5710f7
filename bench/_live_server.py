"""The live benchmark's server child: the ASGI app under daphne or uvicorn, on a
throw-away SQLite database, with its breaker flipped through a pipe (see
:mod:`bench.bench_live`).

A thread of the child (``serve_commands``) reads actions from the pipe: a breaker
operator action, answered with the new state, or ``stats``, answered with the
fan-out's counters.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from bench._process import free_port

__all__ = ["BREAKER", "ask", "per_socket_send", "setup_django", "start_server"]

BREAKER = "bench.live"


def setup_django(directory: str) -> str:
    """Settings on a temporary database; returns a logged-in session cookie."""
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-use-0123456789")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.test import Client as DjangoClient

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-123")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = DjangoClient()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def serve_commands(control: Connection) -> None:
    from dashboard.live.fanout import local_groups
    from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

    breaker = circuit_breaker_registry.get_or_create(BREAKER, CircuitBreakerConfig())
    while True:
        try:
            action = control.recv()
        except EOFError:
            return
        if action == "stats":  # read from another thread: a snapshot, good enough
            control.send(
                (local_groups.sent, local_groups.written, local_groups.dropped, local_groups.errors)
            )
            continue
        getattr(breaker, action)(actor="bench", reason="bench")
        control.send(breaker.state.value)


def per_socket_send() -> None:
    """The path before pre-built frames: every socket frames the push itself (``send``)."""
    from dashboard.live import consumers

    consumers.__dict__["frame_writer"] = lambda send, **kwargs: None


def ask(control: Connection, action: str) -> Any:
    control.send(action)
    return control.recv()


class Uvicorn(multiprocessing.Process):
    """``make run``'s server: uvicorn, uvloop, httptools, the websockets protocol."""

    def __init__(self, port: int, control: Connection, frames: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.control, self.frames = port, control, frames

    def run(self) -> None:
        import warnings

        import uvicorn

        # `--ws websockets` (make run's) is deprecated for the sansio protocol; same API.
        warnings.filterwarnings("ignore", message="The `websockets` implementation is deprecated")

        if not self.frames:
            per_socket_send()
        threading.Thread(target=serve_commands, args=(self.control,), daemon=True).start()
        config = uvicorn.Config(
            "dashboard.asgi:application",
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http="httptools",
            ws="websockets",
            lifespan="on",
            proxy_headers=False,
            access_log=False,
            log_level="warning",
        )
        uvicorn.Server(config).run()


def wait_listening(port: int, process: multiprocessing.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"server on port {port} exited with {process.exitcode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start in {timeout}s")


def start_server(control: Connection, *, server: str, frames: bool) -> tuple[Any, int]:
    """The server child process and its port."""
    from daphne.testing import DaphneProcess
    from django.db import connections

    connections.close_all()
    if server == "uvicorn":
        port = free_port()
        child = Uvicorn(port, control, frames)
        child.start()
        try:
            wait_listening(port, child)
        except RuntimeError:
            child.terminate()
            raise
        return child, port

    class Server(DaphneProcess):  # type: ignore[misc]
        def run(self) -> None:
            from concurrent.futures import ThreadPoolExecutor

            from asgiref.sync import SyncToAsync

            SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
            if not frames:
                per_socket_send()
            super().run()

    def application() -> Any:
        from dashboard.asgi import application

        return application

    def setup() -> None:
        threading.Thread(target=serve_commands, args=(control,), daemon=True).start()

    daphne = Server("127.0.0.1", application, setup=setup)
    daphne.start()
    if not daphne.ready.wait(15):
        daphne.terminate()
        raise RuntimeError("daphne did not start")
    return daphne, daphne.port.value
