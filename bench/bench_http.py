"""The request path: requests per second through daphne, against Django's own floor.

``python -m bench http`` starts, on loopback, two daphne servers in child processes:

- the floor: ``bench._bare_site``, Django with one view returning ``{"status": "ok"}``
  and nothing else (no middleware, database or apps);
- the dashboard (``dashboard.asgi``) on a throw-away SQLite database, demo and API
  throttle off, OTel request instrumentation and span storage on, as `make run` has them:
  API reads are traced at ``TRACES_API_READ_RATIO`` (default 0.01), and one more row,
  on a second server, traces every read (``TRACES_API_READ_RATIO=1``) to show that cost.

When uvicorn, uvloop and httptools are installed (the ``bench`` extra), the floor and
two dashboard rows run again under ``uvicorn --loop uvloop --http httptools``; without
them those rows are skipped with a message.

A load client in this process holds 16 keep-alive connections (asyncio, raw HTTP/1.1)
and counts responses for a fixed time after a warm-up. Every row runs against the same
machine in the same run, so the ratio to the floor is what to read; the client shares
the 2 cores with the server, which lowers every row alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench._harness import Row, Table, quick

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 16
FLOOR = "bare Django view"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start in {timeout}s")


def uvicorn_missing() -> str | None:
    """Why the uvicorn rows cannot run here (None when they can)."""
    missing = [m for m in ("uvicorn", "uvloop", "httptools") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed in {sys.executable} "
            "(the `bench` extra has uvicorn[standard]: `make install`)"
        )
    return None


@contextlib.contextmanager
def _daphne(app: str, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    with _server(["daphne", "-b", "127.0.0.1", "-p", "{port}", app], env) as served:
        yield served


@contextlib.contextmanager
def _uvicorn(app: str, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """uvicorn with uvloop and httptools, one worker, no access log, no lifespan
    (neither Django's handler nor channels' router speaks it)."""
    command = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop"]
    command += ["--http", "httptools", "--lifespan", "off", "--no-access-log", app]
    with _server(command, env) as served:
        yield served


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str]) -> Iterator[tuple[int, int]]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", *(part.replace("{port}", str(port)) for part in command)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _dashboard_env(directory: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{directory}/bench.sqlite3",
        SECRET_KEY="bench-http-only-secret-key-not-for-production-0123456789",
        MEDIA_ROOT=f"{directory}/media",
        RESILIENCE_DEMO="0",
        API_RATE_LIMIT="",
        ALERTS_ENABLED="false",
        DEMO_ADMIN_USER="bench",
        DEMO_ADMIN_PASSWORD="bench-password-123456",
        DJANGO_SETTINGS_MODULE="dashboard.settings",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def _read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response (Content-Length or chunked); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _load(
    port: int,
    path: str,
    headers: dict[str, str],
    seconds: float,
    server_pid: int,
    method: str = "GET",
) -> tuple[float, float]:
    """Requests per second over ``seconds`` after a warm-up, 16 keep-alive connections,
    and the server's CPU time per request (microseconds) over the same window.

    ``{n}`` in ``path`` becomes the connection's number (0-15), so that each connection
    can have a resource of its own. A POST has an empty body."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if method != "GET":
        extra += "Content-Length: 0\r\n"
    counting = False
    done = 0
    stop = False

    async def connection(number: int) -> None:
        nonlocal done
        target = path.replace("{n}", str(number))
        request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop:
                writer.write(request)
                status = await _read_response(reader)
                if status != 200:
                    raise RuntimeError(f"{method} {target} answered {status}")
                if counting:
                    done += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection(n)) for n in range(CONNECTIONS)]
    await asyncio.sleep(1.0 if quick() else 2.0)  # warm-up: caches, connections, JIT-less
    counting = True
    start, cpu_start = time.perf_counter(), _cpu_seconds(server_pid)
    await asyncio.sleep(seconds)
    counted, elapsed = done, time.perf_counter() - start
    cpu = _cpu_seconds(server_pid) - cpu_start
    stop = True
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)
    ]
    if errors:
        raise errors[0]
    return counted / elapsed, cpu / max(counted, 1) * 1e6


def tables() -> list[Table]:
    seconds = 2.0 if quick() else 6.0
    rates: list[Row] = []
    costs: list[Row] = []

    def measure(label: str, port: int, pid: int, path: str, headers: dict[str, str]) -> None:
        rate, cpu = asyncio.run(_load(port, path, headers, seconds, pid))
        note = "no middleware, no database" if label.endswith(FLOOR) else path
        rates.append(Row(label, rate, note))
        costs.append(Row(label, cpu, note))

    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        env = _dashboard_env(directory)
        _manage(env, "migrate", "--noinput")
        _manage(env, "ensure_demo_admin")
        token = _manage(env, "create_api_token", "bench", "--name", "bench").strip().split()[-1]
        auth = {"Authorization": f"Bearer {token}"}
        api_rows = [
            ("health, anonymous", "/api/observability/health", {}),
            ("circuit-breakers, token", "/api/observability/circuit-breakers", auth),
            ("metrics, token", "/api/observability/metrics", auth),
        ]
        with _daphne("bench._bare_site:application", dict(os.environ)) as (port, pid):
            measure(FLOOR, port, pid, "/", {})
        with _daphne("dashboard.asgi:application", env) as (port, pid):
            for label, path, headers in api_rows:
                measure(label, port, pid, path, headers)
        with _daphne("dashboard.asgi:application", {**env, "TRACES_API_READ_RATIO": "1"}) as (
            port,
            pid,
        ):
            label, path, headers = api_rows[1]
            measure(f"{label}, every read traced", port, pid, path, headers)
        # The same apps under uvicorn (uvloop, httptools), in the same run.
        skipped = uvicorn_missing()
        if skipped is None:
            with _uvicorn("bench._bare_site:application", dict(os.environ)) as (port, pid):
                measure(f"uvicorn: {FLOOR}", port, pid, "/", {})
            with _uvicorn("dashboard.asgi:application", env) as (port, pid):
                for label, path, headers in api_rows[:2]:
                    measure(f"uvicorn: {label}", port, pid, path, headers)
        else:
            print(f"(HTTP bench: uvicorn rows skipped: {skipped})")
    title = (
        f"HTTP request path, {CONNECTIONS} keep-alive connections (daphne unless "
        "marked uvicorn, loopback)"
    )
    return [
        Table(title, "req/s", FLOOR, rates, lower_is_better=False),
        # The server's own CPU per answered request: steadier than req/s on a busy
        # machine, since the load client and other processes share the cores.
        Table(f"{title}: server CPU per request", "us/request", FLOOR, costs),
    ]
