"""Cluster mode on Redis: limiter checks per second, and the shared breaker's CLOSED cost.

``python -m bench redis`` starts its own redis-server on loopback (``--save ''
--appendonly no``) and stops it afterwards; without redis-server it prints a note
and skips. Every row talks to the same Redis over TCP on 127.0.0.1.

- limiter, one process: checks per second of ``try_acquire`` (ours: one EVALSHA of
  the token-bucket script, packed once and sent on a pooled connection; and the
  opt-in lease mode, ``lease=10``: one round trip per 10 admissions, over-admission
  at most 10 x processes) against ``limits`` on the same Redis (``RedisStorage``
  with its moving-window and fixed-window strategies, ``hit``). The limit is never
  reached, so every check is admitted and writes. The kinds are measured in
  interleaved rounds (median per kind), so a load spike on the machine hits them all.
- limiter, 4 processes: the same, from 4 processes at once on one limiter key, for
  a fixed time; total checks per second, interleaved rounds too. (On a 2-core
  machine, the 4 clients and Redis share the cores.)
- breaker: a successful call through a CLOSED breaker shared through Redis, against
  the in-memory breaker: the shared one must not add a round trip (target: at most
  5 µs more per call).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from limits import RateLimitItemPerHour
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from bench._harness import Row, Table, per_call_ns, quick
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.rate_limiter import RateLimitConfig, rate_limiter_registry
from resilience.redis import RedisCircuitBreaker, RedisRateLimiter, from_url
from tests.resilience.redis_server import RedisServer, redis_server_path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10**9  # per hour: never reached
LEASE = 10
KINDS = (
    "resilience",
    f"resilience lease={LEASE}",
    "limits moving-window",
    "limits fixed-window",
)
BASELINE = "limits moving-window"


def check_function(kind: str, url: str, name: str) -> Callable[[], object]:
    """One admitted check of limiter ``kind`` on Redis ``url``, as a zero-arg callable."""
    if kind.startswith("resilience"):
        rate_limiter_registry.remove(name)
        limiter = RedisRateLimiter(
            RateLimitConfig(max_requests=LIMIT, time_window=3600),
            name=name,
            redis=from_url(url, socket_timeout=5.0),
            register=False,
            lease=LEASE if "lease" in kind else 0,
        )
        return limiter.try_acquire
    storage = RedisStorage(url)
    item = RateLimitItemPerHour(LIMIT)
    strategy = (
        MovingWindowRateLimiter(storage)
        if kind == "limits moving-window"
        else FixedWindowRateLimiter(storage)
    )

    def hit() -> bool:
        return bool(strategy.hit(item, name))

    return hit


def one_process_table(url: str) -> Table:
    number, rounds = (2_000, 3) if quick() else (10_000, 5)
    checks = {kind: check_function(kind, url, f"bench-{uuid.uuid4().hex[:8]}") for kind in KINDS}
    for check in checks.values():
        check()  # connect, load scripts
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind, check in checks.items():
            start = time.perf_counter()
            for _ in range(number):
                check()
            samples[kind].append((time.perf_counter() - start) / number * 1e9)
    rows = []
    for kind in KINDS:
        ns = statistics.median(samples[kind])
        rows.append(Row(kind, 1e9 / ns, f"{ns / 1000:.1f} µs/check, median of {rounds} rounds"))
    return Table("Redis limiter: admitted checks/s, one process", "checks/s", BASELINE, rows, False)


def cost_table(url: str) -> Table:
    """CPU per admitted check, client and Redis: what bounds throughput once the cores are
    busy, and steadier than wall time on a shared machine."""
    number = 2_000 if quick() else 10_000
    admin = redis.Redis.from_url(url)
    rows = []
    for kind in KINDS:
        check = check_function(kind, url, f"bench-{uuid.uuid4().hex[:8]}")
        check()
        admin.config_resetstat()
        start = time.process_time()
        for _ in range(number):
            check()
        client_us = (time.process_time() - start) / number * 1e6
        stats = admin.info("commandstats")
        server_us = sum(
            int(value["usec"])
            for command, value in stats.items()
            if not command.startswith(("cmdstat_info", "cmdstat_config"))
        ) / number  # fmt: skip
        note = f"client CPU {client_us:.1f} µs + Redis {server_us:.1f} µs"
        rows.append(Row(kind, client_us + server_us, note))
    admin.close()
    return Table("Redis limiter: CPU per admitted check, one process", "µs/check", BASELINE, rows)


def _run_processes(kind: str, url: str, processes: int, seconds: float) -> int:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.bench_redis", kind, url, name, str(seconds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:  # wait until every child is connected
        assert child.stdout is not None
        child.stdout.readline()
    start = time.time() + 0.2
    for child in children:
        assert child.stdin is not None
        child.stdin.write(f"{start}\n")
        child.stdin.flush()
    total = 0
    for child in children:
        out, _ = child.communicate(timeout=60)
        total += int(out.split()[-1])
    return total


def four_process_table(url: str, processes: int = 4) -> Table:
    seconds, rounds = (1.0, 1) if quick() else (1.5, 3)
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            samples[kind].append(_run_processes(kind, url, processes, seconds) / seconds)
    rows = [
        Row(
            kind,
            statistics.median(samples[kind]),
            f"{processes} processes, median of {rounds} rounds of {seconds:g} s",
        )
        for kind in KINDS
    ]
    return Table(
        f"Redis limiter: admitted checks/s, {processes} processes on one key",
        "checks/s",
        BASELINE,
        rows,
        False,
    )


def work() -> int:
    return 1


def breaker_table(url: str) -> Table:
    config = CircuitBreakerConfig(failure_threshold=5, timeout=600)
    for label in ("bench.memory", "bench.shared"):
        circuit_breaker_registry.remove(label)
    memory = CircuitBreaker("bench.memory", config)
    shared = RedisCircuitBreaker("bench.shared", config, redis=from_url(url))
    shared.wait_synced(5)
    memory_decorated = circuit_breaker(name="bench.memory")(work)
    shared_decorated = circuit_breaker(name="bench.shared")(work)
    rows = [
        Row("bare call", per_call_ns(work)),
        Row("in-memory breaker.call", per_call_ns(lambda: memory.call(work))),
        Row("redis-shared breaker.call", per_call_ns(lambda: shared.call(work))),
        Row("in-memory @circuit_breaker", per_call_ns(memory_decorated)),
        Row("redis-shared @circuit_breaker", per_call_ns(shared_decorated)),
    ]
    gap = max(rows[2].value - rows[1].value, rows[4].value - rows[3].value, 0.0)
    rows[2].note = f"+{gap / 1000:.3f} µs/call at most vs in-memory (target <= 5 µs)"
    shared.close()
    for label in ("bench.memory", "bench.shared"):
        circuit_breaker_registry.remove(label)
    return Table(
        "Redis-shared breaker: CLOSED successful call", "ns/call", "in-memory breaker.call", rows
    )


def tables() -> list[Table]:
    if redis_server_path() is None:
        print("\n## Redis: skipped (redis-server is not installed; `make system-deps`)")
        return []
    with RedisServer() as server:
        return [
            one_process_table(server.url),
            cost_table(server.url),
            four_process_table(server.url),
            breaker_table(server.url),
        ]


def _child(kind: str, url: str, name: str, seconds: str) -> None:
    check = check_function(kind, url, name)
    check()
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    time.sleep(max(start - time.time(), 0.0))
    stop = start + float(seconds)
    count = 0
    while time.time() < stop:
        check()
        count += 1
    print(count, flush=True)


if __name__ == "__main__":
    _child(*sys.argv[1:])
