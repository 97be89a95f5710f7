"""A fleet at scale: 50 instances x 20 breakers reporting at 1 Hz into one server process.

The server is a real daphne process (``tests.fleet.processes.running_fleet``, fresh
SQLite database; in Redis mode a private redis-server and ``REDIS_URL``). The instances
are simulated in this process: 50 :class:`FleetReporter`\\ s, each with its own 20
breakers (the same 20 names everywhere, as a fleet running one code base), reporting
over HTTP or through Redis. Measured, per transport:

- dashboard CPU per report: the server process's user+system CPU time over a quiet
  window, divided by the reports it stored meanwhile (the sum of ``reports`` of the
  Instances API);
- breaker transition → browser: a websocket client logged in as an operator and
  subscribed to the Fleet page's stream (``/ws/fleet/``); from the moment breaker
  ``dep0`` of instance 0 changes state (its listener, in this process) to the first
  message showing the group in its new state;
- command → applied: ``POST .../circuit-breakers/dep0/reset`` for instance 0 through
  the REST API, to the moment the breaker closes in that instance (its listener).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import random
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench._harness import Row, Table, quick
from bench._process import cpu_seconds
from resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from resilience.events import BreakerStateChanged, Event, EventBus
from resilience.fleet import FleetReporter, HttpTransport, instance_info

INSTANCES = 50
BREAKERS = 20
FLIP = "dep0"
STATE = re.compile(r'data-fleet-breaker="dep0"[^>]*>\s*<header class="state-(\w+)"')


class _Registry:
    def __init__(self, breakers: list[CircuitBreaker]) -> None:
        self._by_name = {breaker.name: breaker for breaker in breakers}

    def all(self) -> list[CircuitBreaker]:
        return list(self._by_name.values())

    def get(self, name: str) -> CircuitBreaker | None:
        return self._by_name.get(name)


class _Empty:
    def all(self) -> list[Any]:
        return []

    def get(self, name: str) -> None:
        return None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else 0.0


class Simulation:
    """50 reporters in this process; instance 0's ``dep0`` records its transitions."""

    def __init__(self, *, url: str, token: str, redis_url: str | None) -> None:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=3600)
        self.transitions: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        self.reporters: list[FleetReporter] = []
        for index in range(INSTANCES):
            bus = EventBus()
            breakers = [CircuitBreaker(f"dep{n}", config, register=False) for n in range(BREAKERS)]
            if index == 0:
                self.flip = breakers[0]
                self.flip.add_listener(bus.publish)
                bus.subscribe(self._on_event)
            transport: Any
            if redis_url:
                from resilience.fleet.redis_transport import RedisTransport

                transport = RedisTransport(redis_url)
            else:
                transport = HttpTransport(url, token=token)
            reporter = FleetReporter(
                transport,
                instance=instance_info(service=f"svc{index % 5}"),
                event_bus=bus,
                breakers=_Registry(breakers),
                limiters=_Empty(),
                rng=random.Random(index),
            )
            self.reporters.append(reporter)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, BreakerStateChanged):
            with self.changed:
                self.transitions.append((time.time(), event.to_state))
                self.changed.notify_all()

    def start(self) -> None:
        for reporter in self.reporters:
            reporter.start()
            time.sleep(1.0 / INSTANCES)  # spread the reports over the second

    def stop(self) -> None:
        for reporter in self.reporters:
            reporter.stop(timeout=2)

    def open_flip(self) -> float:
        def boom() -> None:
            raise OSError("down")

        with contextlib.suppress(OSError):
            self.flip.call(boom)
        return self._wait_for("open")

    def _wait_for(self, state: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, to_state in reversed(self.transitions):
                    if to_state == state:
                        self.transitions.clear()
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{FLIP} did not turn {state}")
                self.changed.wait(left)


class Browser:
    """A logged-in websocket client on the Fleet page's stream, noting dep0's state."""

    def __init__(self, base: str, username: str, password: str) -> None:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{base}/accounts/login/", timeout=10).read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert csrf is not None, "no CSRF token on the login page"
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": csrf.group(1)}
        ).encode()
        request = urllib.request.Request(
            f"{base}/accounts/login/", data=form, headers={"Referer": f"{base}/accounts/login/"}
        )
        opener.open(request, timeout=10).read()
        cookies = "; ".join(f"{c.name}={c.value}" for c in jar)
        assert "sessionid" in cookies, "login failed"
        from websockets.sync.client import connect

        self.socket = connect(
            base.replace("http://", "ws://") + "/ws/fleet/",
            additional_headers={"Cookie": cookies, "Origin": base},
            max_size=None,
            open_timeout=10,
        )
        self.seen: list[tuple[float, str]] = []
        self.messages = 0
        self.bytes = 0
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for message in self.socket:
                now = time.time()
                text = message if isinstance(message, str) else message.decode()
                self.messages += 1
                self.bytes += len(text)
                found = STATE.search(text)
                if found:
                    with self.changed:
                        self.seen.append((now, found.group(1)))
                        self.changed.notify_all()

    def first_after(self, since: float, state: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, seen_state in self.seen:
                    if at >= since and seen_state == state:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the browser never saw {FLIP} {state}")
                self.changed.wait(left)

    def close(self) -> None:
        self.socket.close()


@contextlib.contextmanager
def _server(transport: str) -> Iterator[tuple[Any, str | None]]:
    from tests.fleet.processes import running_fleet
    from tests.resilience.redis_server import RedisServer

    settings = {
        "FLEET_REPORT_INTERVAL": "1",
        "FLEET_STALE_AFTER": "5",
        "FLEET_GONE_AFTER": "60",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    if transport == "http":
        with running_fleet(**settings) as fleet:
            yield fleet, None
        return
    with RedisServer() as redis, running_fleet(REDIS_URL=redis.url, **settings) as fleet:
        yield fleet, redis.url


def _stored(fleet: Any) -> int:
    return sum(row["reports"] for row in fleet.api("GET", "/instances")["items"])


def measure(transport: str, rounds: int, window: float) -> dict[str, Any]:
    from tests.fleet.processes import PASSWORD, wait_until

    with _server(transport) as (fleet, redis_url):
        sim = Simulation(url=fleet.server.url, token=fleet.tokens["report"], redis_url=redis_url)
        sim.start()
        browser: Browser | None = None
        try:
            wait_until(lambda: len(fleet.api("GET", "/instances")["items"]) == INSTANCES, 60)
            time.sleep(3)  # every reporter past its first report
            assert fleet.server.process is not None
            pid = fleet.server.process.pid
            stored, cpu = _stored(fleet), cpu_seconds(pid)
            time.sleep(window)
            reports = _stored(fleet) - stored
            cpu_per_report = (cpu_seconds(pid) - cpu) / max(reports, 1)

            browser = Browser(fleet.server.url, "operator", PASSWORD)
            to_browser: list[float] = []
            to_applied: list[float] = []
            rng = random.Random(3)
            for _ in range(rounds):
                opened = sim.open_flip()
                to_browser.append(browser.first_after(opened, "open") - opened)
                time.sleep(rng.uniform(0, 1.0))  # a random phase of the report cycle
                clicked = time.time()
                acted = fleet.api(
                    "POST",
                    f"/circuit-breakers/{FLIP}/reset",
                    {"reason": "bench", "instance": sim.reporters[0].instance["id"]},
                )
                assert acted.get("instances"), acted
                closed = sim._wait_for("closed")
                to_applied.append(closed - clicked)
                to_browser.append(browser.first_after(closed, "closed") - closed)
            messages = browser.messages
            average = browser.bytes / max(messages, 1)
        finally:
            if browser is not None:
                browser.close()
            sim.stop()
    return {
        "reports": reports,
        "window": window,
        "cpu_ms": cpu_per_report * 1000,
        "browser": to_browser,
        "applied": to_applied,
        "message_kb": average / 1024,
    }


def scale_tables() -> list[Table]:
    rounds, window = (4, 5.0) if quick() else (20, 15.0)
    results = {transport: measure(transport, rounds, window) for transport in ("http", "redis")}
    cpu_rows, latency_rows = [], []
    for transport, found in results.items():
        cpu_rows.append(
            Row(
                f"server CPU per report, {transport}",
                found["cpu_ms"],
                note=f"{found['reports']} reports in {found['window']:.0f} s",
            )
        )
        browser, applied = found["browser"], found["applied"]
        latency_rows += [
            Row(f"transition → browser p50, {transport}", _percentile(browser, 0.5) * 1000),
            Row(
                f"transition → browser p99, {transport}",
                _percentile(browser, 0.99) * 1000,
                note=f"{len(browser)} transitions; ~{found['message_kb']:.0f} KB a message; "
                "target <= 250",
            ),
            Row(f"command → applied p50, {transport}", _percentile(applied, 0.5) * 1000),
            Row(
                f"command → applied p99, {transport}",
                _percentile(applied, 0.99) * 1000,
                note=f"{len(applied)} resets; target <= {1000 if transport == 'http' else 200}",
            ),
        ]
    title = f"{INSTANCES} instances x {BREAKERS} breakers at 1 Hz into one daphne process"
    return [
        Table(f"Fleet at scale: {title}", "ms", "server CPU per report, http", cpu_rows),
        Table(
            f"Fleet at scale: latencies ({title})",
            "ms",
            "transition → browser p50, http",
            latency_rows,
        ),
    ]
