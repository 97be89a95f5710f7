"""Child of test_redis_breaker_processes.py: ``python -m tests.resilience._redis_trial_workers
URL NAME SECONDS SEED``.

Two threads call one RedisCircuitBreaker for SECONDS (a dependency that fails half the
time and takes up to 2 ms), then print one JSON line: every trial call, with the Redis
half-open period it was admitted in and when it ran (``time.monotonic``, which all
processes of one host share).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState
from resilience.errors import CircuitOpenError
from resilience.redis import RedisCircuitBreaker, from_url

MAX_TRIALS = 2


class Recording(RedisCircuitBreaker):
    """Notes the Redis period a half-open call was admitted in (for the thread's call)."""

    __slots__ = ("admitted",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.admitted = threading.local()
        super().__init__(*args, **kwargs)

    def _admit(self) -> int:
        generation = super()._admit()
        with self._lock:
            current = generation == self._generation and self._state is CircuitState.HALF_OPEN
            period = (self._remote_epoch, self._remote_version)
        self.admitted.period = period if current else None
        return generation


def main(url: str, name: str, seconds: str, seed: str) -> None:
    breaker = Recording(
        name,
        CircuitBreakerConfig(
            failure_threshold=2, success_threshold=2, half_open_max_calls=MAX_TRIALS, timeout=0.02
        ),
        redis=from_url(url, socket_timeout=2.0),
    )
    assert breaker.wait_synced(5)
    trials: list[dict[str, Any]] = []
    calls = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + float(seconds)

    def worker(rng: random.Random) -> None:
        while time.monotonic() < deadline:
            breaker.admitted.period = None
            failing = rng.random() < 0.5

            def dependency(failing: bool = failing) -> None:
                start = time.monotonic()
                time.sleep(rng.random() * 0.002)
                period = breaker.admitted.period
                if period is not None:
                    with lock:
                        trials.append({"period": period, "start": start, "end": time.monotonic()})
                if failing:
                    raise RuntimeError("down")

            try:
                breaker.call(dependency)
            except (RuntimeError, CircuitOpenError):
                time.sleep(0.0005)
            calls[0] += 1

    threads = [
        threading.Thread(target=worker, args=(random.Random(f"{seed}-{i}"),)) for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    breaker.close()
    sys.stdout.write(json.dumps({"trials": trials, "calls": calls[0]}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
