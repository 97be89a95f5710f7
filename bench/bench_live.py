"""Live dashboard: transition-to-socket latency, sockets one process holds, CPU per push.

The project's ASGI application runs in a child process with a throw-away SQLite
database, under daphne (the tests' and the production recipe's server) and under uvicorn
as ``make run`` serves it (uvloop, httptools, ``--ws websockets``). The clients log in
with a session cookie and connect like browsers (Origin, Cookie); they are a cheap
hand-written websocket reader in this process (``bench._ws_client``: handshake by hand,
frames parsed from the byte stream, a few µs a message), so the client takes as little
of the 2 cores as it can. The breaker lives in the server process
(``bench._live_server``) and is flipped there through a pipe, as a failing call would
flip it.

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
import os
import resource
import tempfile
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from bench._harness import Row, Table, quick
from bench._live_server import BREAKER, ask, setup_django, start_server
from bench._process import cpu_seconds
from bench._ws_client import open_many

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

    clients = await open_many(port, "/ws/live/breakers/", cookie, sockets, on_text)
    await asyncio.sleep(2.0)  # initial fragments delivered, sockets idle
    for received in arrivals:
        received.clear()
    loop = asyncio.get_running_loop()
    cpu_before = cpu_seconds(pid)
    sent: list[tuple[str, float]] = []
    for i in range(flips):
        action = "force_open" if i % 2 == 0 else "reset"
        started = time.perf_counter()
        state = await loop.run_in_executor(None, ask, control, action)
        sent.append((state, started))
        await asyncio.sleep(0.3)  # > the coalescing interval: every flip is its own push
    await asyncio.sleep(0.5)
    cpu = cpu_seconds(pid) - cpu_before
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

    connected = await open_many(port, "/ws/live/metrics/", cookie, sockets, on_text)
    await asyncio.sleep(2.0)  # the history sent on connect is out of the way
    for i in range(len(counts)):
        counts[i] = 0
    seen.clear()
    cpu_before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    cpu = cpu_seconds(pid) - cpu_before
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
    child, port = start_server(theirs, server=server, frames=frames)
    try:
        with asyncio.Runner(loop_factory=_event_loop()) as runner:
            latencies, cpu = runner.run(_latency(port, cookie, ours, sockets, flips, child.pid))
            capacity = runner.run(_capacity(port, cookie, sockets, seconds, child.pid))
        stats = ask(control=ours, action="stats")
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
        cookie = setup_django(directory)
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
