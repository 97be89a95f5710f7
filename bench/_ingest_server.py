"""bench_ingest's real-server part: daphne serving the dashboard, on SQLite or on a
throwaway PostgreSQL cluster, fed by client processes using the real OTLP/HTTP exporter.

Processes: this one (the conductor: starts, polls /api/observability/health, reads
/proc for CPU time), the server (``python -m daphne``), and client processes
(``python -m bench._ingest_server client ...``) that import only the OpenTelemetry
exporter and bench data. Figures:

- sustained spans/s (INGEST_RETRY_AFTER=1): spans sent by 2 clients sending back to
  back for ``seconds``, divided by the time from the first send until the server has
  *stored* them all;
- server µs/span: CPU time (user + system) of the server process over that run,
  per span; PostgreSQL's backends are counted separately;
- at 5,000 spans/s offered (one paced client, full ``exporter.export`` of SDK spans):
  requests refused with 503 (the exporter retries them), spans dropped, stored/sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BATCH = 512
_TICK = os.sysconf("SC_CLK_TCK")
_ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def _cluster_cpu_seconds(postmaster: int) -> float:
    """CPU of a PostgreSQL cluster: live processes, plus the ended backends the
    postmaster reaped (its children's times)."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / _TICK
    return reaped + _cpu_seconds([postmaster, *_children(postmaster)])


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


@contextmanager
def database(kind: str) -> Iterator[tuple[str, int | None]]:
    """(DATABASE_URL, postmaster pid or None) of a fresh database of ``kind``."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-srv-"))
    tmp.chmod(0o755)
    try:
        if kind == "sqlite":
            yield f"sqlite:///{tmp / 'db.sqlite3'}", None
            return
        from tests.services import postgres_start, postgres_stop

        url = postgres_start(tmp / "pg")
        try:
            pid = int((tmp / "pg" / "data" / "postmaster.pid").read_text().split()[0])
            yield url, pid
        finally:
            postgres_stop(tmp / "pg")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DATABASE_URL=url,
        TRACES_ENABLED="1",
        DEBUG="0",
        PYTHONPATH=str(_ROOT),
        # Senders come back after 1 s, not the default 5 s, when the queue is full: a
        # sustained run then measures the writer, not the exporters' waits.
        INGEST_RETRY_AFTER="1",
        # The conductor's health polls are not traced: "written" counts ingested spans.
        OTEL_PYTHON_DJANGO_EXCLUDED_URLS="/static/,/ws/,/favicon.ico,/v1/,/api/",
        SECRET_KEY=env.get("SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789"),
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_TRACES_EXPORTER", None)
    return env


_SETUP = """
import django; django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from dashboard.api import testing
user = testing.make_user("bench-ingest", "traces.ingest_spans", "dashboard.view_dashboard")
print(testing.token_for(user))
"""


@contextmanager
def server(url: str) -> Iterator[tuple[str, str, int]]:
    """(base URL, token, pid) of daphne serving the dashboard on ``url``."""
    from tests.services import free_port

    env = _env(url)
    token = subprocess.run(
        [sys.executable, "-c", _SETUP], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["dashboard.asgi:application"],
        env=env,
        cwd=_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health(base, token)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("daphne did not start") from None
                time.sleep(0.2)
        yield base, token, process.pid
    finally:
        process.terminate()
        process.wait(10)


def health(base: str, token: str) -> dict[str, Any]:
    """The span writer's and the ingest's counters, from the health endpoint."""
    request = urllib.request.Request(
        f"{base}/api/observability/health", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        checks = json.loads(response.read())["checks"]
    return {**checks["span_queue"]["data"], **checks["span_ingest"]["data"]}


def _wait_written(base: str, token: str, target: int, timeout: float = 300) -> tuple[float, int]:
    """(when the server had written ``target`` spans, health polls it took)."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        if health(base, token)["written"] >= target or time.monotonic() > deadline:
            return time.perf_counter(), polls
        time.sleep(0.25)


def _health_cpu(base: str, token: str, pid: int, calls: int = 20) -> float:
    """Server CPU seconds per health poll (subtracted: the conductor's, not ingest's)."""
    before = _cpu_seconds([pid])
    for _ in range(calls):
        health(base, token)
    return (_cpu_seconds([pid]) - before) / calls


def _clients(base: str, token: str, mode: str, count: int, *args: str) -> list[dict[str, int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench._ingest_server", "client", mode, base, token, str(i)]
            + list(args),
            stdout=subprocess.PIPE,
            cwd=_ROOT,
            env={**os.environ, "PYTHONPATH": str(_ROOT)},
        )
        for i in range(count)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=600)
        out.append(json.loads(stdout.decode().splitlines()[-1]))
    return out


def run(kind: str, *, seconds: float) -> dict[str, float]:
    """The figures for one database kind (see the module docstring)."""
    with database(kind) as (url, postmaster), server(url) as (base, token, pid):
        _clients(base, token, "sustained", 1, "1")  # warm up: imports, connections
        per_poll = _health_cpu(base, token, pid)
        before = health(base, token)
        cpu0 = _cpu_seconds([pid])
        db0 = _cluster_cpu_seconds(postmaster) if postmaster else 0.0
        start = time.perf_counter()
        sent = sum(r["sent"] for r in _clients(base, token, "sustained", 2, str(seconds)))
        end, polls = _wait_written(base, token, before["written"] + sent)
        cpu1 = _cpu_seconds([pid]) - per_poll * (polls + 1)
        db1 = _cluster_cpu_seconds(postmaster) if postmaster else 0.0
        after = health(base, token)
        stored = after["written"] - before["written"]
        (paced,) = _clients(base, token, "paced", 1, str(seconds), "5000")
        paced_end, _ = _wait_written(base, token, after["written"] + paced["sent"])
        final = health(base, token)
    return {
        "sent": sent,
        "stored": stored,
        "seconds": end - start,
        "spans_per_s": stored / (end - start),
        "server_us": (cpu1 - cpu0) / max(stored, 1) * 1e6,
        "health_ms": per_poll * 1e3,
        "database_us": (db1 - db0) / max(stored, 1) * 1e6,
        "refused_sustained": after["refused_spans"] - before["refused_spans"],
        "paced_sent": paced["sent"],
        "paced_failed": paced["failed"],
        "paced_refused": final["refused_spans"] - after["refused_spans"],
        "paced_dropped": final["dropped"] - after["dropped"] + final["failed"] - after["failed"],
        "paced_stored": final["written"] - after["written"],
    }


# ---- the client processes ------------------------------------------------------------


def _bodies(seed: int, copies: int) -> tuple[list[bytes], list[Any]]:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from bench._traces_data import sdk_spans

    spans = sdk_spans(BATCH * 4)
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    bodies = []
    for copy in range(copies):
        for batch in batches:
            message = encode_spans(batch)
            prefix = (seed * 1_000_000 + copy).to_bytes(6, "big")
            for group in message.resource_spans:
                for scope in group.scope_spans:
                    for span in scope.spans:
                        span.trace_id = prefix + span.trace_id[6:]
            bodies.append(message.SerializeToString())
    return bodies, batches


def client(mode: str, base: str, token: str, seed: int, seconds: float, rate: float) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(
        endpoint=f"{base}/v1/traces", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    sent = failed = 0
    if mode == "sustained":
        # Bodies encoded up front by the exporter's encoder, sent by its HTTP client
        # (retries on 503/429 included): the exporter's encoding is the caller's cost.
        bodies, _ = _bodies(seed, 25)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            result = exporter._client.export(bodies[i % len(bodies)])
            if result.success:
                sent += BATCH
            else:
                failed += BATCH
            i += 1
    else:
        _, batches = _bodies(seed, 1)
        interval = BATCH / rate
        start = time.monotonic()
        for i in range(int(seconds * rate / BATCH)):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if exporter.export(batches[i % len(batches)]) is SpanExportResult.SUCCESS:
                sent += BATCH
            else:
                failed += BATCH
    exporter.shutdown()  # type: ignore[no-untyped-call]
    print(json.dumps({"sent": sent, "failed": failed}))


if __name__ == "__main__":
    _, _role, mode, base, token, seed, seconds, *rest = sys.argv
    client(mode, base, token, int(seed), float(seconds), float(rest[0]) if rest else 0.0)
