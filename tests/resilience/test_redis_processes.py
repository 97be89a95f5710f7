"""Several real processes sharing one Redis: limiter budget, breaker state, outages.

Each worker is ``python -m tests.resilience._redis_workers`` in a clean interpreter
(no fork of the pytest process and its threads and sockets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.resilience._redis_workers", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait(5)}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, line: str) -> dict[str, Any]:
        self.send(line)
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def start(workers: list[Worker], *args: str) -> Worker:
    worker = Worker(*args)
    workers.append(worker)
    return worker


def test_four_processes_never_admit_more_than_the_budget(redis_server, workers):
    name = f"budget-{uuid.uuid4().hex[:8]}"
    # No refill to speak of: the budget is exactly the capacity, 3000 tokens.
    group = [
        start(workers, "limiter", redis_server.url, name, "3000", "86400", "0", "n1500")
        for _ in range(4)
    ]
    assert all(worker.read()["ready"] for worker in group)
    for worker in group:
        worker.send("go 0 0")
    results = [worker.read() for worker in group]
    assert sum(r["attempts"] for r in results) == 6000
    assert sum(r["admitted"] for r in results) == 3000
    assert all(r["errors"] == 0 for r in results)


def test_four_processes_admit_within_one_percent_of_a_refilling_budget(redis_server, workers):
    name = f"refill-{uuid.uuid4().hex[:8]}"
    rate = 1000  # tokens/s, and a bucket of 1000
    group = [
        start(workers, "limiter", redis_server.url, name, str(rate), "1", "0", "run")
        for _ in range(4)
    ]
    assert all(worker.read()["ready"] for worker in group)
    begin = time.time() + 0.2
    end = begin + 1.5
    for worker in group:
        worker.send(f"go {begin} {end}")
    results = [worker.read() for worker in group]
    admitted = sum(r["admitted"] for r in results)
    attempts = sum(r["attempts"] for r in results)
    # The bucket is created full by the first check (at or after `begin`); the last
    # check starts before `end` (+1: it may reach Redis just after).
    budget = rate + rate * (end - begin)
    assert attempts > 2 * budget, "the workers must saturate the limiter"
    assert admitted <= budget + 1
    assert admitted >= 0.99 * budget


def test_a_breaker_opened_in_a_rejects_in_b_and_a_reset_in_c_closes_both(redis_server, workers):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    a, b, c = (start(workers, "breaker", redis_server.url, name) for _ in range(3))
    assert all(worker.read()["ready"] for worker in (a, b, c))

    b.send("wait open 5")
    opened = a.ask("fail 3")
    assert opened["state"] == "open"
    seen = b.read()
    assert seen["seen"], seen
    assert seen["time"] - opened["time"] < 0.1  # visible in B within 100 ms
    assert "failure_threshold reached" in seen["reason"]
    assert "observed via Redis" in seen["reason"]
    rejected = b.ask("call")
    assert rejected["rejected"] is True
    assert 59 < rejected["remaining"] <= 60

    a.send("wait closed 5")
    b.send("wait closed 5")
    reset = c.ask("reset")
    assert reset["state"] == "closed"
    for worker in (a, b):
        seen = worker.read()
        assert seen["seen"], seen
        assert seen["time"] - reset["time"] < 0.1
        assert seen["reason"].startswith("manual reset (observed via Redis")
        assert worker.ask("call")["result"] == 1


def test_redis_killed_and_restarted_mid_run(fresh_server: RedisServer, workers):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    a, b = (start(workers, "breaker", fresh_server.url, name) for _ in range(2))
    assert all(worker.read()["ready"] for worker in (a, b))

    a.send("loop 1.5")
    b.send("loop 1.5")
    time.sleep(0.4)  # let the loops run against a live Redis first
    fresh_server.kill()
    time.sleep(0.5)
    fresh_server.start()
    for worker in (a, b):
        result = worker.read()
        assert result["errors"] == 0, result  # no backend exception reached a caller
        assert result["calls"] > 100
    # Converged after the restart: a transition in A reaches B again.
    b.send("wait open 5")
    assert a.ask("fail 3")["state"] == "open"
    seen = b.read()
    assert seen["seen"], seen
    state = b.ask("state")["snapshot"]
    assert state["backend_available"] is True
    assert state["subscribed"] is True


FORKED = """
import json, os, sys, time
from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState
from resilience.redis import RedisCircuitBreaker, from_url

breaker = RedisCircuitBreaker(
    sys.argv[2], CircuitBreakerConfig(failure_threshold=1, timeout=60), redis=from_url(sys.argv[1])
)
assert breaker.wait_synced(5)
ready_r, ready_w = os.pipe()
pid = os.fork()  # like a pre-forking server (gunicorn --preload) after app import
if pid == 0:
    os.write(ready_w, b"1" if breaker.wait_synced(5) else b"0")  # its own thread synced
    deadline = time.monotonic() + 5
    while breaker._state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.005)
    os._exit(0 if breaker._state is CircuitState.OPEN else 1)
assert os.read(ready_r, 1) == b"1"
try:
    breaker.call(lambda: 1 / 0)
except ZeroDivisionError:
    pass
_, status = os.waitpid(pid, 0)
print(json.dumps({"child": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_follows_the_shared_breaker(redis_server):
    name = f"fork-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-c", FORKED, redis_server.url, name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"child": 0}


def test_lease_mode_over_admission_is_bounded_by_lease_times_processes(redis_server, workers):
    # 4 processes, a bucket of 40 refilling at 10 tokens/s, leases of 5 tokens. Time is
    # set by hand in every process (bucket and lease clocks), so the counts are exact.
    name = f"lease-{uuid.uuid4().hex[:8]}"
    capacity, lease = 40, 5
    group = [
        start(workers, "lease", redis_server.url, name, str(capacity), str(lease)) for _ in range(4)
    ]
    assert all(worker.read()["ready"] for worker in group)

    def at(epoch: float) -> None:
        for worker in group:
            assert worker.ask(f"time {epoch}")["time"] == epoch

    def hammer() -> int:
        for worker in group:  # all four at once
            worker.send("take 100")
        admitted = [worker.read() for worker in group]
        assert all(r["errors"] == 0 for r in admitted)
        # Then one by one, so that no leased token is left unused.
        drained = [worker.ask(f"take {lease * 2}")["admitted"] for worker in group]
        return sum(r["admitted"] for r in admitted) + sum(drained)

    at(1_700_000_000.0)
    # Without time passing, every admission is a token of the bucket: exactly the capacity.
    assert hammer() == capacity

    at(1_700_000_010.0)  # the bucket is full again (4 s refill)
    # Each process admits once and keeps lease - 1 tokens: 4 + 4 * 4 = 20 tokens taken.
    assert [worker.ask("take 1")["admitted"] for worker in group] == [1, 1, 1, 1]
    at(1_700_000_020.0)  # full again: in this instant the exact limiter admits 40
    admitted = hammer()
    # The leases taken before the instant are spent in it: 40 + 4 * (5 - 1).
    assert admitted == capacity + len(group) * (lease - 1)
    assert admitted <= capacity + len(group) * lease  # the documented bound
