"""A worker process for the fleet tests: plain Python, only ``resilience`` (no Django).

Connected with ``resilience.fleet.connect()`` from the environment. A background
thread keeps calling a healthy breaker (so the test sees the worker keep serving
while the dashboard is down); the test drives it over stdin, one command a line,
and reads one JSON line back for each:

- ``fail NAME N``: N failing calls through breaker NAME; answers its state;
- ``state NAME``: the breaker's state;
- ``stats``: calls served, call errors, and the reporter's counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading

import resilience.fleet
from resilience import CircuitBreakerConfig, circuit_breaker_registry

served = 0
errors = 0


def serve() -> None:
    global served, errors
    healthy = circuit_breaker_registry.get_or_create("healthy", CircuitBreakerConfig())
    stop = threading.Event()
    while not stop.wait(0.005):
        try:
            healthy.call(lambda: None)
            served += 1
        except Exception:
            errors += 1


def fail() -> None:
    raise ConnectionError("upstream down")


def main() -> None:
    config = CircuitBreakerConfig(failure_threshold=2, timeout=3600)
    for name in sys.argv[1:]:
        circuit_breaker_registry.get_or_create(name, config)
    interval = float(os.environ.get("WORKER_REPORT_INTERVAL", "0.2"))
    reporter = resilience.fleet.connect(interval=interval, max_backoff=0.5, timeout=1.0)
    assert reporter is not None, "neither REDIS_URL nor RESILIENCE_DASHBOARD_URL is set"
    assert "django" not in sys.modules, "the worker must not import Django"
    threading.Thread(target=serve, daemon=True).start()
    print(json.dumps({"instance": reporter.instance["id"]}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "fail":
            breaker = circuit_breaker_registry.get(words[1])
            assert breaker is not None
            for _ in range(int(words[2])):
                with contextlib.suppress(ConnectionError):
                    breaker.call(fail)
            answer: object = breaker.state.value
        elif words[0] == "state":
            breaker = circuit_breaker_registry.get(words[1])
            answer = None if breaker is None else breaker.state.value
        elif words[0] == "stats":
            answer = {
                "served": served,
                "errors": errors,
                "sent": reporter.reports_sent,
                "failed": reporter.reports_failed,
                "connected": reporter.connected,
                "transport": type(reporter.transport).__name__,
                "pushed": reporter.answers_pushed,
                "django": "django" in sys.modules,
            }
        else:
            answer = f"unknown command {line!r}"
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
