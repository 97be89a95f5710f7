"""Live dashboard: transition-to-socket latency, sockets one process holds, CPU per push.

A real daphne server (the project's ASGI application) runs in a child process with a
throw-away SQLite database; real websocket clients (the ``websockets`` package) log in
with a session cookie and connect like browsers. The breaker lives in the server
process and is flipped there through a pipe, as a failing call would flip it.

1. Latency: 1,000 sockets on the breakers page; each transition's OOB fragment is timed
   from the moment the parent asks for the transition to its arrival at every socket.
2. Capacity: 1,000 sockets on the metrics page, each receiving the 1 Hz metric samples;
   we count how many stay connected and receive every sample, and the spread between
   the first and last socket getting the same sample.
3. CPU per push: the server process's CPU time (user + system, from /proc) over each
   phase, divided by the pushes it made.

Both run twice, side by side: the in-process fan-out (what the server does), and the
channel-layer path it replaced (every push ``group_send`` through the in-memory layer,
channels' own ``dispatch`` with its database-thread hop per message), switched on in
the server child only. The load client shares the machine's cores with the server.
Run time is bounded (about 5 minutes on a loaded 2-core machine; BENCH_QUICK=1: 100
sockets, about 40 s).
"""

from __future__ import annotations

import asyncio
import os
import resource
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


def _use_channel_layer() -> None:
    """The path before the fan-out: every push through the layer, channels' dispatch."""
    from channels.consumer import AsyncConsumer
    from channels.layers import get_channel_layer

    from dashboard.live import broadcast, consumers, sampler

    class ThroughLayer:
        def count(self, group: str) -> int:
            return 1

        async def group_send(self, group: str, message: dict[str, Any]) -> int:
            await get_channel_layer().group_send(group, message)
            return 0

    for module in (broadcast, sampler):
        module.__dict__["local_groups"] = ThroughLayer()
    consumers.LiveConsumer.dispatch = AsyncConsumer.dispatch  # type: ignore[method-assign]
    consumers.LiveConsumer.deliver = AsyncConsumer.dispatch  # type: ignore[method-assign]


def _start_server(control: Connection, *, layer: bool) -> Any:
    from daphne.testing import DaphneProcess
    from django.db import connections

    class Server(DaphneProcess):  # type: ignore[misc]
        def run(self) -> None:
            from concurrent.futures import ThreadPoolExecutor

            from asgiref.sync import SyncToAsync

            SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
            if layer:
                _use_channel_layer()
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _open_many(url: str, cookie: str, base: str, sockets: int) -> list[Any]:
    origin = base.replace("ws", "http", 1)
    clients: list[Any] = []
    for batch in range(0, sockets, 50):
        clients += await asyncio.gather(
            *(_open(url, cookie, origin) for _ in range(min(50, sockets - batch))),
            return_exceptions=True,
        )
    return [ws for ws in clients if not isinstance(ws, BaseException)]


async def _latency(
    base: str, cookie: str, control: Connection, sockets: int, flips: int, pid: int
) -> tuple[list[float], float]:
    from dashboard.live.templatetags.live import dom_id

    marker = f'id="{dom_id(BREAKER)}-state"'
    clients = await _open_many(f"{base}/ws/live/breakers/", cookie, base, sockets)
    arrivals: list[list[tuple[str, float]]] = [[] for _ in clients]

    async def listen(index: int, ws: Any) -> None:
        async for message in ws:
            if marker in message and "hx-swap-oob" in message:
                state = message.split('data-state="', 1)[1].split('"', 1)[0]
                arrivals[index].append((state, time.perf_counter()))

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(clients)]
    await asyncio.sleep(2.0)  # initial fragments delivered, sockets idle
    for received in arrivals:
        received.clear()
    loop = asyncio.get_running_loop()
    cpu_before = _cpu_seconds(pid)
    sent: list[tuple[str, float]] = []
    for i in range(flips):
        action = "force_open" if i % 2 == 0 else "reset"
        started = time.perf_counter()
        state = await loop.run_in_executor(None, _ask, control, action)
        sent.append((state, started))
        await asyncio.sleep(0.3)  # > the coalescing interval: every flip is its own push
    await asyncio.sleep(0.5)
    cpu = _cpu_seconds(pid) - cpu_before
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
    return latencies, cpu


def _ask(control: Connection, action: str) -> str:
    control.send(action)
    state: str = control.recv()
    return state


async def _capacity(
    base: str, cookie: str, sockets: int, seconds: float, pid: int
) -> tuple[int, int, list[float], float]:
    connected = await _open_many(f"{base}/ws/live/metrics/", cookie, base, sockets)
    seen: dict[str, list[float]] = {}
    counts = [0] * len(connected)

    async def listen(index: int, ws: Any) -> None:
        async for message in ws:
            if 'id="live-sample"' in message:
                t = message.split('data-t="', 1)[1].split('"', 1)[0]
                seen.setdefault(t, []).append(time.perf_counter())
                counts[index] += 1

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(connected)]
    await asyncio.sleep(2.0)  # the history sent on connect is out of the way
    for i in range(len(counts)):
        counts[i] = 0
    seen.clear()
    cpu_before = _cpu_seconds(pid)
    await asyncio.sleep(seconds)
    cpu = _cpu_seconds(pid) - cpu_before
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in connected), return_exceptions=True)
    expected = max(int(seconds) - 1, 1)
    steady = sum(1 for c in counts if c >= expected)
    spreads = [(max(ts) - min(ts)) * 1000 for ts in seen.values() if len(ts) == len(connected)]
    return len(connected), steady, spreads, cpu / max(len(seen), 1)


def _raise_fd_limit(sockets: int) -> None:
    """Two descriptors per socket in this machine (client and server ends), and some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * sockets + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _run(cookie: str, *, layer: bool, sockets: int, flips: int, seconds: float) -> Any:
    ours, theirs = Pipe()
    server = _start_server(theirs, layer=layer)
    try:
        base = f"ws://localhost:{server.port.value}"
        latencies, cpu = asyncio.run(_latency(base, cookie, ours, sockets, flips, server.pid))
        capacity = asyncio.run(_capacity(base, cookie, sockets, seconds, server.pid))
    finally:
        server.terminate()
        server.join(5)
    return latencies, cpu / flips, capacity


def tables() -> list[Table]:
    sockets, flips, seconds = (100, 10, 5.0) if quick() else (1000, 20, 10.0)
    _raise_fd_limit(sockets)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        cookie = _setup_django(directory)
        for label, layer in (("fan-out", False), ("channel layer", True)):
            results[label] = _run(
                cookie, layer=layer, sockets=sockets, flips=flips, seconds=seconds
            )
    latency_rows = [Row("target p99", 100.0)]
    hold_rows = [Row("target", float(sockets))]
    cpu_rows = []
    for label, (latencies, cpu_per_flip, capacity) in results.items():
        finite = [v for v in latencies if v != float("inf")] or [float("nan")]
        lost = len(latencies) - len(finite)
        latency_rows += [
            Row(f"{label}: p50", _percentile(finite, 50)),
            Row(f"{label}: p99", _percentile(finite, 99), f"{lost} lost" if lost else ""),
            Row(f"{label}: max", max(finite)),
        ]
        held, steady, spreads, cpu_per_sample = capacity
        spread = f"sample spread p50 {_percentile(spreads, 50):.0f} ms" if spreads else ""
        hold_rows += [
            Row(f"{label}: opened", float(held)),
            Row(f"{label}: receiving every sample", float(steady), spread),
        ]
        cpu_rows += [
            Row(f"{label}: per transition", cpu_per_flip * 1000, "state + history pushes"),
            Row(f"{label}: per 1 Hz sample", cpu_per_sample * 1000, "tick + render + send"),
        ]
    return [
        Table(
            f"Breaker transition → websocket fragment, {sockets} sockets, {flips} transitions",
            "ms",
            "target p99",
            latency_rows,
        ),
        Table(
            f"Sockets held by one process with 1 Hz metric samples ({seconds:.0f} s)",
            "sockets",
            "target",
            hold_rows,
            lower_is_better=False,
        ),
        Table(
            f"Server CPU per push to {sockets} sockets (user + system, /proc)",
            "ms",
            "fan-out: per transition",
            cpu_rows,
        ),
    ]
