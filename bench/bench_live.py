"""Live dashboard: transition-to-socket latency, sockets one process holds, CPU per push.

The project's ASGI application runs in a child process with a throw-away SQLite
database, under daphne (the tests' and the production recipe's server) and under uvicorn
as ``make run`` serves it (uvloop, httptools, ``--ws websockets``). The clients log in
with a session cookie and connect like browsers (Origin, Cookie); they are a cheap
hand-written websocket reader in this process (handshake by hand, frames parsed from the
byte stream: a few µs a message), so the client takes as little of the 2 cores as it
can. The breaker lives in the server process and is flipped there through a pipe, as a
failing call would flip it.

1. Latency: N sockets on the breakers page; each transition's OOB fragment is timed
   from the moment the parent asks for the transition to its arrival at every socket.
2. Capacity: N sockets on the metrics page, each receiving the 1 Hz metric samples;
   we count how many stay connected and receive every sample, and the spread between
   the first and last socket getting the same sample.
3. CPU per push: the server process's CPU time (user + system, from /proc) over each
   phase, divided by the pushes it made: the steadier figure on a loaded machine.

Each runs under both servers, with the push written as one pre-built frame to every
socket (``dashboard.live.fanout``: what the server does) and with each socket framing it
through the server's ``send`` (the path before, switched on in the server child only).
Run time is bounded (about 4 minutes on a loaded 2-core machine; BENCH_QUICK=1: 100
sockets, about a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import socket
import tempfile
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from bench._harness import Row, Table, quick

BREAKER = "bench.live"
VARIANTS = (
    ("daphne", True),
    ("daphne", False),
    ("uvicorn", True),
    ("uvicorn", False),
)


def _label(server: str, frames: bool) -> str:
    return f"{server}, {'one frame' if frames else 'send per socket'}"


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
    from django.test import Client as DjangoClient

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-123")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = DjangoClient()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _serve_commands(control: Connection) -> None:
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


def _per_socket_send() -> None:
    """The path before pre-built frames: every socket frames the push itself (``send``)."""
    from dashboard.live import consumers

    consumers.__dict__["frame_writer"] = lambda send, **kwargs: None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
            _per_socket_send()
        threading.Thread(target=_serve_commands, args=(self.control,), daemon=True).start()
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


def _wait_listening(port: int, process: multiprocessing.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"server on port {port} exited with {process.exitcode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start in {timeout}s")


def _start_server(control: Connection, *, server: str, frames: bool) -> tuple[Any, int]:
    """The server child process and its port."""
    from daphne.testing import DaphneProcess
    from django.db import connections

    connections.close_all()
    if server == "uvicorn":
        port = _free_port()
        child = Uvicorn(port, control, frames)
        child.start()
        try:
            _wait_listening(port, child)
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
                _per_socket_send()
            super().run()

    def application() -> Any:
        from dashboard.asgi import application

        return application

    def setup() -> None:
        threading.Thread(target=_serve_commands, args=(control,), daemon=True).start()

    daphne = Server("127.0.0.1", application, setup=setup)
    daphne.start()
    if not daphne.ready.wait(15):
        daphne.terminate()
        raise RuntimeError("daphne did not start")
    return daphne, daphne.port.value


class Client(asyncio.Protocol):
    """A cheap websocket client: the handshake by hand, then the server's (unmasked)
    frames parsed from the byte stream. ``on_text(payload, arrived)`` gets each text
    message with ``time.perf_counter()`` at its arrival; pings are answered."""

    def __init__(self, request: bytes, on_text: Any) -> None:
        self.request, self.on_text = request, on_text
        self.buffer = bytearray()
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_result(False)

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        buffer = self.buffer
        buffer += data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            accepted = buffer.startswith(b"HTTP/1.1 101")
            del buffer[: end + 4]
            self.opened.set_result(accepted)
            if not accepted:
                self.transport.close()
                return
        while len(buffer) >= 2:
            opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if buffer[1] & 0x80 or buffer[0] & 0x70:
                raise ValueError("the bench client reads unmasked, uncompressed frames only")
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            if opcode == 1:
                self.on_text(payload, arrived)
            elif opcode == 9:  # ping: a masked pong (mask key 0: payload unchanged)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.transport.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.write(b"\x88\x80\0\0\0\0")  # a masked close, no payload
            self.transport.close()


async def _open(port: int, path: str, cookie: str, on_text: Any) -> Client | None:
    # No Sec-WebSocket-Extensions: the servers send plain frames (browsers offer
    # permessage-deflate; the frames the fan-out writes are plain either way).
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:{port}\r\n"
        f"Cookie: {cookie}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    try:
        _, client = await loop.create_connection(
            lambda: Client(request, on_text), "127.0.0.1", port
        )
        if await asyncio.wait_for(client.opened, 30):
            return client
    except (OSError, TimeoutError):
        return None
    client.close()
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _open_many(port: int, path: str, cookie: str, sockets: int, on_text: Any) -> list[Client]:
    clients: list[Client | None] = []
    for batch in range(0, sockets, 50):
        clients += await asyncio.gather(
            *(
                _open(port, path, cookie, lambda p, t, i=i: on_text(i, p, t))
                for i in range(batch, min(batch + 50, sockets))
            )
        )
    return [c for c in clients if c is not None]


async def _latency(
    port: int, cookie: str, control: Connection, sockets: int, flips: int, pid: int
) -> tuple[list[float], float]:
    from dashboard.live.templatetags.live import dom_id

    marker = f'id="{dom_id(BREAKER)}-state"'.encode()
    arrivals: list[list[tuple[str, float]]] = [[] for _ in range(sockets)]

    def on_text(index: int, payload: bytes, arrived: float) -> None:
        if marker in payload and b"hx-swap-oob" in payload:
            state = payload.split(b'data-state="', 1)[1].split(b'"', 1)[0].decode()
            arrivals[index].append((state, arrived))

    clients = await _open_many(port, "/ws/live/breakers/", cookie, sockets, on_text)
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
    for client in clients:
        client.close()
    missing = sockets * flips - len(latencies)
    if missing:
        latencies.extend([float("inf")] * missing)
    return latencies, cpu


def _ask(control: Connection, action: str) -> Any:
    control.send(action)
    return control.recv()


async def _capacity(
    port: int, cookie: str, sockets: int, seconds: float, pid: int
) -> tuple[int, int, list[float], float]:
    seen: dict[bytes, list[float]] = {}
    counts = [0] * sockets

    def on_text(index: int, payload: bytes, arrived: float) -> None:
        if b'id="live-sample"' in payload:
            t = payload.split(b'data-t="', 1)[1].split(b'"', 1)[0]
            seen.setdefault(t, []).append(arrived)
            counts[index] += 1

    connected = await _open_many(port, "/ws/live/metrics/", cookie, sockets, on_text)
    await asyncio.sleep(2.0)  # the history sent on connect is out of the way
    for i in range(len(counts)):
        counts[i] = 0
    seen.clear()
    cpu_before = _cpu_seconds(pid)
    await asyncio.sleep(seconds)
    cpu = _cpu_seconds(pid) - cpu_before
    samples = len(seen)
    for client in connected:
        client.close()
    expected = max(int(seconds) - 1, 1)
    steady = sum(1 for c in counts if c >= expected)
    spreads = [(max(ts) - min(ts)) * 1000 for ts in seen.values() if len(ts) == len(connected)]
    return len(connected), steady, spreads, cpu / max(samples, 1)


def _raise_fd_limit(sockets: int) -> None:
    """Two descriptors per socket in this machine (client and server ends), and some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * sockets + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _event_loop() -> Any:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _run(
    cookie: str, *, server: str, frames: bool, sockets: int, flips: int, seconds: float
) -> Any:
    ours, theirs = Pipe()
    child, port = _start_server(theirs, server=server, frames=frames)
    try:
        with asyncio.Runner(loop_factory=_event_loop()) as runner:
            latencies, cpu = runner.run(_latency(port, cookie, ours, sockets, flips, child.pid))
            capacity = runner.run(_capacity(port, cookie, sockets, seconds, child.pid))
        stats = _ask(control=ours, action="stats")
    finally:
        child.terminate()
        child.join(5)
    return latencies, cpu / flips, capacity, stats


def tables() -> list[Table]:
    sockets, flips, seconds = (100, 10, 5.0) if quick() else (1000, 20, 10.0)
    _raise_fd_limit(sockets)
    variants = [v for v in VARIANTS if v[0] != "uvicorn" or _has("uvicorn", "uvloop")]
    load = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        cookie = _setup_django(directory)
        for server, frames in variants:
            results[_label(server, frames)] = _run(
                cookie, server=server, frames=frames, sockets=sockets, flips=flips, seconds=seconds
            )
    load_note = f"load {load:.1f} → {os.getloadavg()[0]:.1f}"
    latency_rows = [Row("target p99", 100.0, load_note)]
    hold_rows = [Row("target", float(sockets))]
    cpu_rows = []
    for label, (latencies, cpu_per_flip, capacity, stats) in results.items():
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
        pushed, written, dropped, _ = stats
        framed = f"{written:,} of {pushed:,} socket pushes as one frame, {dropped} dropped"
        cpu_rows += [
            Row(f"{label}: per transition", cpu_per_flip * 1000, f"state + history; {framed}"),
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
            f"{_label('daphne', True)}: per transition",
            cpu_rows,
        ),
    ]


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)
