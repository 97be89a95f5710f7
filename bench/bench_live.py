"""Live dashboard: transition-to-socket latency, and sockets one process holds.

A real daphne server (the project's ASGI application) runs in a child process with a
throw-away SQLite database; real websocket clients (the ``websockets`` package) log in
with a session cookie and connect like browsers. The breaker lives in the server
process and is flipped there through a pipe, as a failing call would flip it.

1. Latency: 100 sockets on the breakers page; each transition's OOB fragment is timed
   from the moment the parent asks for the transition to its arrival at every socket.
2. Capacity: sockets on the metrics page, each receiving the 1 Hz metric samples; we
   count how many stay connected and receive every sample, and the spread between the
   first and last socket getting the same sample.
Run time is bounded (about 20 s; BENCH_QUICK=1: 10 s with fewer sockets).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from bench._harness import Row, Table, quick

BREAKER = "bench.live"


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    index = max(int(round(percent / 100 * len(ordered) + 0.5)) - 1, 0)
    return ordered[min(index, len(ordered) - 1)]


def _setup_django(directory: str) -> str:
    """Settings on a temporary database; returns a logged-in session cookie."""
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-use-0123456789")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-123")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _serve_commands(control: Connection) -> None:
    from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry

    breaker = circuit_breaker_registry.get_or_create(BREAKER, CircuitBreakerConfig())
    while True:
        try:
            action = control.recv()
        except EOFError:
            return
        getattr(breaker, action)(actor="bench", reason="bench")
        control.send(breaker.state.value)


def _start_server(control: Connection) -> Any:
    from daphne.testing import DaphneProcess
    from django.db import connections

    class Server(DaphneProcess):  # type: ignore[misc]
        def run(self) -> None:
            from concurrent.futures import ThreadPoolExecutor

            from asgiref.sync import SyncToAsync

            SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
            super().run()

    def application() -> Any:
        from dashboard.asgi import application

        return application

    def setup() -> None:
        threading.Thread(target=_serve_commands, args=(control,), daemon=True).start()

    connections.close_all()
    server = Server("127.0.0.1", application, setup=setup)
    server.start()
    if not server.ready.wait(15):
        server.terminate()
        raise RuntimeError("daphne did not start")
    return server


async def _open(url: str, cookie: str, origin: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(
        url,
        origin=origin,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
        proxy=None,
        open_timeout=30,
        max_size=None,
    )


async def _latency(
    base: str, cookie: str, control: Connection, sockets: int, flips: int
) -> list[float]:
    from dashboard.live.templatetags.live import dom_id

    marker = f'id="{dom_id(BREAKER)}-state"'
    clients = [
        await _open(f"{base}/ws/live/breakers/", cookie, base.replace("ws", "http", 1))
        for _ in range(sockets)
    ]
    arrivals: list[list[tuple[str, float]]] = [[] for _ in clients]

    async def listen(index: int, ws: Any) -> None:
        async for message in ws:
            if marker in message and "hx-swap-oob" in message:
                state = message.split('data-state="', 1)[1].split('"', 1)[0]
                arrivals[index].append((state, time.perf_counter()))

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(clients)]
    await asyncio.sleep(1.0)  # initial fragments delivered, sockets idle
    for received in arrivals:
        received.clear()
    loop = asyncio.get_running_loop()
    sent: list[tuple[str, float]] = []
    for i in range(flips):
        action = "force_open" if i % 2 == 0 else "reset"
        started = time.perf_counter()
        state = await loop.run_in_executor(None, _ask, control, action)
        sent.append((state, started))
        await asyncio.sleep(0.3)  # > the coalescing interval: every flip is its own push
    await asyncio.sleep(0.5)
    latencies = []
    for received in arrivals:
        for state, started in sent:
            later = [t for s, t in received if s == state and t >= started]
            if later:
                latencies.append((min(later) - started) * 1000)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    missing = sockets * flips - len(latencies)
    if missing:
        latencies.extend([float("inf")] * missing)
    return latencies


def _ask(control: Connection, action: str) -> str:
    control.send(action)
    state: str = control.recv()
    return state


async def _capacity(
    base: str, cookie: str, sockets: int, seconds: float
) -> tuple[int, int, list[float]]:
    origin = base.replace("ws", "http", 1)
    clients = []
    for batch in range(0, sockets, 50):
        clients += await asyncio.gather(
            *(
                _open(f"{base}/ws/live/metrics/", cookie, origin)
                for _ in range(min(50, sockets - batch))
            ),
            return_exceptions=True,
        )
    connected = [ws for ws in clients if not isinstance(ws, BaseException)]
    seen: dict[str, list[float]] = {}
    counts = [0] * len(connected)

    async def listen(index: int, ws: Any) -> None:
        async for message in ws:
            if 'id="live-sample"' in message:
                t = message.split('data-t="', 1)[1].split('"', 1)[0]
                seen.setdefault(t, []).append(time.perf_counter())
                counts[index] += 1

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(connected)]
    await asyncio.sleep(seconds)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in connected), return_exceptions=True)
    expected = max(int(seconds) - 1, 1)
    steady = sum(1 for c in counts if c >= expected)
    spreads = [(max(ts) - min(ts)) * 1000 for ts in seen.values() if len(ts) == len(connected)]
    return len(connected), steady, spreads


def tables() -> list[Table]:
    sockets, flips = (30, 10) if quick() else (100, 30)
    capacity, seconds = (150, 4.0) if quick() else (500, 6.0)
    with tempfile.TemporaryDirectory() as directory:
        cookie = _setup_django(directory)
        ours, theirs = Pipe()
        server = _start_server(theirs)
        try:
            base = f"ws://localhost:{server.port.value}"
            latencies = asyncio.run(_latency(base, cookie, ours, sockets, flips))
            held, steady, spreads = asyncio.run(_capacity(base, cookie, capacity, seconds))
        finally:
            server.terminate()
            server.join(5)
    finite = [v for v in latencies if v != float("inf")]
    lost = len(latencies) - len(finite)
    latency = Table(
        f"Breaker transition → websocket fragment, {sockets} sockets, {flips} transitions",
        "ms",
        "target p99",
        [
            Row("target p99", 250.0),
            Row("p50", _percentile(finite, 50)),
            Row("p99", _percentile(finite, 99), f"{lost} lost" if lost else ""),
            Row("max", max(finite)),
            Row("mean", statistics.fmean(finite)),
        ],
    )
    spread_note = f"sample spread p50 {_percentile(spreads, 50):.0f} ms" if spreads else ""
    hold = Table(
        f"Sockets held by one process with 1 Hz metric samples ({seconds:.0f} s)",
        "sockets",
        "target",
        [
            Row("target", 500.0),
            Row("opened", float(held)),
            Row("receiving every sample", float(steady), spread_note),
        ],
        lower_is_better=False,
    )
    return [latency, hold]
