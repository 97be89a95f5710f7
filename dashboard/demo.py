"""A small live workload for `make run`: fake services behind breakers and limiters.

Each fake service has a failure pattern (healthy, flaky, down for part of a cycle),
so breakers open and close again and the limiter rejects bursts while an operator
watches. It runs in a daemon thread of the serving process, because breakers and
limiters live in that process's memory.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass

from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry
from resilience.errors import CircuitOpenError
from resilience.rate_limiter import RateLimitConfig, rate_limiter_registry

logger = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    pass


@dataclass(frozen=True)
class FakeService:
    name: str
    failure_rate: float = 0.0
    # Down for [down_from, down_until) seconds of every `cycle` seconds.
    cycle: float = 0.0
    down_from: float = 0.0
    down_until: float = 0.0

    def __call__(self, now: float, rng: random.Random) -> str:
        if self.cycle and self.down_from <= now % self.cycle < self.down_until:
            raise ServiceUnavailable(f"{self.name} is down")
        if rng.random() < self.failure_rate:
            raise ServiceUnavailable(f"{self.name} returned 503")
        return "ok"


SERVICES = [
    FakeService("demo.search-api", failure_rate=0.05),
    FakeService("demo.llm", failure_rate=0.02),
    FakeService("demo.payments", cycle=40.0, down_from=8.0, down_until=18.0),
]

_started = threading.Event()


def step(now: float, rng: random.Random) -> None:
    """One simulated request: pass the front-door limiter, then call each service."""
    limiter = rate_limiter_registry.get_or_create(
        "demo.workflow-api", RateLimitConfig(max_requests=20, time_window=1, burst_size=5)
    )
    if not limiter.try_acquire():
        return
    for service in SERVICES:
        breaker = circuit_breaker_registry.get_or_create(
            service.name, CircuitBreakerConfig(failure_threshold=3, success_threshold=2, timeout=5)
        )
        with contextlib.suppress(ServiceUnavailable, CircuitOpenError):
            breaker.call(service, now, rng)


def _run(interval: float) -> None:
    rng = random.Random(7)
    start = time.monotonic()
    while True:
        # Bursts: some ticks send several requests at once, so the limiter rejects.
        burst = 8 if rng.random() < 0.05 else 1
        for _ in range(burst):
            try:
                step(time.monotonic() - start, rng)
            except Exception:
                logger.exception("demo step failed")
        time.sleep(interval)


def start(interval: float = 0.05) -> bool:
    """Start the workload thread once per process; returns False if already running."""
    if _started.is_set():
        return False
    _started.set()
    threading.Thread(target=_run, args=(interval,), name="resilience-demo", daemon=True).start()
    return True
