"""Child processes of the multi-process Redis tests: ``python -m tests.resilience._redis_workers``.

``limiter URL NAME MAX WINDOW BURST run|nATTEMPTS``: wait for "go START END" on
stdin, hammer the shared limiter (from START to END, or ATTEMPTS times), print one
JSON line of results.

``lease URL NAME CAPACITY LEASE``: a REPL over one lease-mode RedisRateLimiter (no
refill to speak of: CAPACITY per day) whose bucket clock and lease clock are both set by
hand: ``time T`` (epoch seconds), ``take N`` (N checks; answers the admissions).

``breaker URL NAME``: a REPL over one RedisCircuitBreaker. Reads commands on stdin,
answers one JSON line each: ``fail N``, ``call``, ``state``, ``reset``,
``wait STATE SECONDS`` (until a BreakerStateChanged to STATE is published here),
``loop SECONDS`` (calls and limiter checks while Redis may die: counts exceptions).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Any

from resilience.circuit_breaker import CircuitBreakerConfig
from resilience.errors import CircuitOpenError
from resilience.events import BreakerStateChanged, Event, bus
from resilience.rate_limiter import RateLimitConfig
from resilience.redis import RedisCircuitBreaker, RedisRateLimiter, from_url


def say(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def limiter_main(url: str, name: str, max_requests: str, window: str, burst: str, run: str) -> None:
    limiter = RedisRateLimiter(
        RateLimitConfig(
            max_requests=int(max_requests), time_window=float(window), burst_size=int(burst)
        ),
        name=name,
        redis=from_url(url, socket_timeout=2.0),
    )
    limiter.available_tokens()  # connect and load the script before the clock starts
    say({"ready": True})
    # "go START END": every worker starts and stops at the same wall-clock instants.
    _, start, end = sys.stdin.readline().split()
    admitted = attempts = 0
    if run.startswith("n"):
        first = time.time()
        for _ in range(int(run[1:])):
            attempts += 1
            admitted += limiter.try_acquire()
    else:
        time.sleep(max(float(start) - time.time(), 0.0))
        first = time.time()
        stop = float(end)
        while time.time() < stop:
            attempts += 1
            admitted += limiter.try_acquire()
    last = time.time()
    say({"admitted": admitted, "attempts": attempts, "first": first, "last": last,
         "errors": limiter.snapshot()["backend_errors"]})  # fmt: skip


def boom() -> None:
    raise RuntimeError("dependency down")


def ok() -> int:
    return 1


def breaker_main(url: str, name: str) -> None:
    breaker = RedisCircuitBreaker(
        name,
        CircuitBreakerConfig(failure_threshold=3, timeout=60.0),
        redis=from_url(url),
        retry_interval=0.2,
    )
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=1_000_000, time_window=1.0),
        name=f"{name}-rl",
        redis=breaker._backend.client,
        retry_interval=0.2,
    )
    seen: list[tuple[float, BreakerStateChanged]] = []
    changed = threading.Condition()

    def listen(event: Event) -> None:
        if isinstance(event, BreakerStateChanged):
            with changed:
                seen.append((time.time(), event))
                changed.notify_all()

    bus.subscribe(listen)
    say({"ready": breaker.wait_synced(5), "state": breaker.state.value})
    for line in sys.stdin:
        command, *args = line.split()
        if command == "fail":
            for _ in range(int(args[0])):
                with contextlib.suppress(RuntimeError, CircuitOpenError):
                    breaker.call(boom)
            say({"state": breaker.state.value, "time": time.time()})
        elif command == "call":
            try:
                say({"result": breaker.call(ok), "state": breaker.state.value})
            except CircuitOpenError as exc:
                say({"rejected": True, "remaining": exc.remaining, "state": breaker.state.value})
        elif command == "state":
            say({"state": breaker.state.value, "snapshot": breaker.snapshot()})
        elif command == "reset":
            breaker.reset(actor="worker", reason="test")
            say({"state": breaker.state.value, "time": time.time()})
        elif command == "wait":
            target, timeout = args[0], float(args[1])
            deadline = time.monotonic() + timeout
            with changed:
                found = None
                while found is None:
                    found = next((item for item in seen if item[1].to_state == target), None)
                    left = deadline - time.monotonic()
                    if found is not None or left <= 0:
                        break
                    changed.wait(left)
                seen.clear()
            if found is None:
                say({"seen": False, "state": breaker.state.value})
            else:
                say({"seen": True, "time": found[0], "reason": found[1].reason,
                     "state": breaker.state.value})  # fmt: skip
        elif command == "loop":
            deadline = time.monotonic() + float(args[0])
            calls = errors = 0
            kinds: set[str] = set()
            while time.monotonic() < deadline:
                try:
                    limiter.try_acquire()
                    breaker.call(ok)
                    calls += 1
                except CircuitOpenError:
                    calls += 1
                except Exception as exc:
                    errors += 1
                    kinds.add(type(exc).__name__)
                time.sleep(0.001)
            say({"calls": calls, "errors": errors, "kinds": sorted(kinds),
                 "state": breaker.state.value})  # fmt: skip
        elif command == "quit":
            break
    breaker.close()


def lease_main(url: str, name: str, capacity: str, lease: str) -> None:
    now = [1_700_000_000.0]

    def clock() -> float:
        return now[0]

    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=int(capacity), time_window=4.0),
        name=name,
        redis=from_url(url, socket_timeout=2.0),
        clock=clock,
        time_source=clock,
        lease=int(lease),
        lease_ttl=3600.0,
    )
    limiter.available_tokens()
    say({"ready": True})
    for line in sys.stdin:
        command, value = line.split()
        if command == "time":
            now[0] = float(value)
            say({"time": now[0]})
        elif command == "take":
            admitted = sum(limiter.try_acquire() for _ in range(int(value)))
            say({"admitted": admitted, "errors": limiter.snapshot()["backend_errors"]})


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "limiter":
        limiter_main(*rest)
    elif kind == "lease":
        lease_main(*rest)
    else:
        breaker_main(*rest)
