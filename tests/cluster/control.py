"""Test-only ASGI entry for the cluster tests: the dashboard plus a control socket.

Each server process of a cluster test runs ``daphne tests.cluster.control:application``:
the real dashboard (``dashboard.asgi``, configured by the environment like any
deployment, ``REDIS_URL`` included) and a thread listening on
``127.0.0.1:$CLUSTER_CONTROL_PORT`` for one-line JSON commands from the test (create a
breaker, make calls fail, read its state, create a user and an API token, flush and
read the breaker history). It exists only in the tests, never in the application.
"""

from __future__ import annotations

import contextlib
import json
import os
import socketserver
import threading
from typing import Any

from dashboard.asgi import application

__all__ = ["application"]


class Upstream503(Exception):
    pass


def _fail() -> None:
    raise Upstream503("upstream returned 503")


def _breaker(name: str) -> Any:
    from resilience.circuit_breaker import circuit_breaker_registry

    breaker = circuit_breaker_registry.get(name)
    if breaker is None:
        raise LookupError(f"no breaker {name!r}: send ['breaker', name, config] first")
    return breaker


def _user(username: str, password: str, codenames: list[str]) -> str:
    from django.contrib.auth.models import Permission, User

    from dashboard.api.testing import token_for

    user = User.objects.create_user(username, password=password)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return token_for(user, name="cluster tests")


def _events(name: str) -> list[dict[str, Any]]:
    from dashboard.breakers.models import BreakerEvent

    rows = BreakerEvent.objects.filter(breaker=name).order_by("occurred_at", "id")
    return [
        {"from": r.from_state, "to": r.to_state, "reason": r.reason, "process": r.process}
        for r in rows
    ]


def run(command: list[Any]) -> Any:
    from django.db import close_old_connections

    from dashboard.breakers import recorder
    from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

    kind, *args = command
    if kind == "breaker":
        name, config = args
        breaker = circuit_breaker_registry.get_or_create(name, CircuitBreakerConfig(**config))
        wait_synced = getattr(breaker, "wait_synced", None)
        if wait_synced is not None and not wait_synced(5):
            raise TimeoutError(f"breaker {name!r} did not sync with Redis")
        return {"class": type(breaker).__name__, "state": breaker.state.value}
    if kind == "fail":
        breaker = _breaker(args[0])
        for _ in range(args[1]):
            with contextlib.suppress(Exception):
                breaker.call(_fail)
        return breaker.state.value
    if kind == "call":
        from resilience.errors import CircuitOpenError

        try:
            return _breaker(args[0]).call(lambda: "ok")
        except CircuitOpenError:
            return "rejected"
    if kind == "state":
        return _breaker(args[0]).state.value
    if kind == "pid":
        return os.getpid()
    close_old_connections()
    try:
        if kind == "user":
            return _user(*args)
        if kind == "flush":
            return recorder.flush(5.0)
        if kind == "events":
            return _events(args[0])
    finally:
        close_old_connections()
    raise ValueError(f"unknown command {kind!r}")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            try:
                reply = {"ok": run(json.loads(line))}
            except Exception as exc:  # reported to the test, which fails with it
                reply = {"error": repr(exc)}
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(port: int) -> None:
    # Commands may come before any HTTP request: this entry point starts the runtime
    # itself (the server starts it on its first connection), so the breakers they
    # create are Redis-backed and their transitions recorded, as the server's are.
    from dashboard import runtime

    runtime.start()
    with _Server(("127.0.0.1", port), _Handler) as server:
        server.serve_forever()


if interval := os.environ.get("CLUSTER_SAMPLER_INTERVAL"):
    # The 1 Hz sampler also refreshes breaker cards; slowed down, only the event-driven
    # push can make a page follow a transition in time.
    from dashboard.live import runtime

    runtime.sampler.interval = float(interval)

if port := os.environ.get("CLUSTER_CONTROL_PORT"):
    threading.Thread(target=_serve, args=(int(port),), daemon=True, name="control").start()
