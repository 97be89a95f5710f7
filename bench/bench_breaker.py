"""Circuit breaker hot paths: a CLOSED successful call and an OPEN rejection.

Rows: a bare function call, the honest floor (the least hand-written code with the
same contract: thread-safe, counted, the same fields on the error; lock-free state
reads like ours, see ``FloorBreaker``), ours, and the peers pybreaker, circuitbreaker
and purgatory (its sync API). Each breaker is called through its own ``call`` API
or decorator, the way an application would use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import circuitbreaker
import purgatory
import pybreaker
from purgatory.domain.model import OpenedState

from bench._harness import Row, Table, per_call_ns
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import CircuitOpenError

CLOSED, OPEN = 0, 1


class FloorOpenError(Exception):
    """What the floor raises: the same fields as CircuitOpenError, and no ``__init__``."""

    name: str
    remaining: float


_new_floor_error = FloorOpenError.__new__


class FloorBreaker:
    """The least code that meets the breaker's contract, written by hand.

    Thread-safe, with the fields and counts ours keeps: consecutive failures open it for
    ``timeout`` seconds, rejections and successes are counted, the error carries ``name``
    and ``remaining``. As in ours, the CLOSED and OPEN paths read the state without the
    lock (one attribute read is atomic); the lock guards only writes that must agree:
    the failure count and the transition. Counters are ``itertools.count`` (one atomic C
    call). A message is made once per open period, not per rejection.
    """

    __slots__ = (
        "failures",
        "lock",
        "message",
        "name",
        "open_until",
        "rejected",
        "state",
        "successes",
        "threshold",
        "timeout",
    )

    def __init__(self, name: str, threshold: int = 5, timeout: float = 60.0) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.state = CLOSED
        self.failures = 0
        self.threshold = threshold
        self.timeout = timeout
        self.open_until = 0.0
        self.message = ""
        self.successes = itertools.count().__next__
        self.rejected = itertools.count().__next__

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.state == OPEN:
            remaining = self.open_until - time.monotonic()
            if remaining > 0:
                self.rejected()
                error = _new_floor_error(FloorOpenError, self.message)  # no __init__ call
                error.name = self.name
                error.remaining = remaining
                raise error
            with self.lock:  # the timeout is over: let calls through again
                self.state = CLOSED
        try:
            result = fn(*args, **kwargs)
        except Exception:
            with self.lock:
                self.failures += 1
                if self.failures >= self.threshold:
                    self.open_until = time.monotonic() + self.timeout
                    self.message = f"circuit {self.name!r} is open"
                    self.state = OPEN
            raise
        self.successes()
        if self.failures:
            with self.lock:
                self.failures = 0
        return result


def work() -> int:
    return 1


def fail() -> int:
    raise ConnectionError("down")


def _trip(call: Callable[[], object], attempts: int = 10) -> None:
    for _ in range(attempts):
        with contextlib.suppress(Exception):
            call()


def _caught(call: Callable[[], object], error: type[BaseException]) -> Callable[[], None]:
    def run() -> None:
        # try/except, not contextlib.suppress: the measured loop must not pay for a
        # context manager on top of the rejection.
        try:  # noqa: SIM105
            call()
        except error:
            pass

    return run


def _ours(name: str) -> CircuitBreaker:
    circuit_breaker_registry.remove(name)
    return CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=5, timeout=600))


def _purgatory_breaker(
    factory: purgatory.SyncCircuitBreakerFactory, name: str
) -> Callable[[Callable[[], int]], Callable[[], int]]:
    decorate: Callable[[Callable[[], int]], Callable[[], int]] = factory(name, threshold=5, ttl=600)
    return decorate


def closed_table() -> Table:
    floor = FloorBreaker("floor", timeout=600)
    ours = _ours("bench.closed")
    decorated = circuit_breaker(name="bench.closed")(work)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=600)
    cb_pkg = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=600)(work)
    purg = _purgatory_breaker(purgatory.SyncCircuitBreakerFactory(), "closed")(work)
    rows = [
        Row("bare call", per_call_ns(work)),
        Row("floor breaker", per_call_ns(lambda: floor.call(work))),
        Row("resilience", per_call_ns(lambda: ours.call(work)), "breaker.call"),
        Row("resilience decorator", per_call_ns(decorated), "@circuit_breaker"),
        Row("pybreaker", per_call_ns(lambda: pyb.call(work))),
        Row("circuitbreaker", per_call_ns(cb_pkg), "decorator"),
        Row("purgatory (sync)", per_call_ns(purg, number=50_000), "decorator"),
    ]
    circuit_breaker_registry.remove("bench.closed")
    return Table("breaker: CLOSED successful call", "ns/call", "floor breaker", rows)


def open_table() -> Table:
    floor = FloorBreaker("floor", timeout=600)
    _trip(lambda: floor.call(fail))
    ours = _ours("bench.open")
    _trip(lambda: ours.call(fail))
    decorated = circuit_breaker(name="bench.open")(fail)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=600)
    _trip(lambda: pyb.call(fail))
    cb_pkg = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=600)(fail)
    _trip(cb_pkg)
    purg = _purgatory_breaker(purgatory.SyncCircuitBreakerFactory(), "open")(fail)
    _trip(purg)
    rows = [
        Row("bare call", per_call_ns(work), "no breaker, nothing raised"),
        Row("floor breaker", per_call_ns(_caught(lambda: floor.call(fail), FloorOpenError))),
        Row(
            "resilience",
            per_call_ns(_caught(lambda: ours.call(fail), CircuitOpenError)),
            "breaker.call",
        ),
        Row(
            "resilience decorator",
            per_call_ns(_caught(decorated, CircuitOpenError)),
            "@circuit_breaker",
        ),
        Row(
            "pybreaker",
            per_call_ns(_caught(lambda: pyb.call(fail), pybreaker.CircuitBreakerError)),
        ),
        Row(
            "circuitbreaker",
            per_call_ns(_caught(cb_pkg, circuitbreaker.CircuitBreakerError)),
            "decorator",
        ),
        Row(
            "purgatory (sync)",
            per_call_ns(_caught(purg, OpenedState), number=50_000),
            "decorator",
        ),
    ]
    circuit_breaker_registry.remove("bench.open")
    return Table("breaker: OPEN rejection, raised and caught", "ns/call", "floor breaker", rows)


async def _awork() -> int:
    return 1


def async_table() -> Table:
    """Our acall against purgatory's async API, awaited in one coroutine loop."""
    ours = _ours("bench.async")
    factory = purgatory.AsyncCircuitBreakerFactory()
    number = 2_000 if _quick() else 20_000

    async def measure() -> list[Row]:
        async def timed(make: Callable[[], Any]) -> float:
            best = float("inf")
            for _ in range(3 if _quick() else 5):
                start = time.perf_counter_ns()
                for _ in range(number):
                    await make()
                best = min(best, (time.perf_counter_ns() - start) / number)
            return best

        purg_breaker = await factory.get_breaker("async", threshold=5, ttl=600)

        async def with_purgatory() -> int:
            async with purg_breaker:
                return await _awork()

        return [
            Row("bare await", await timed(_awork)),
            Row("resilience acall", await timed(lambda: ours.acall(_awork))),
            Row("purgatory (async)", await timed(with_purgatory), "async with breaker"),
        ]

    rows = asyncio.run(measure())
    circuit_breaker_registry.remove("bench.async")
    return Table("breaker: CLOSED successful await", "ns/call", "resilience acall", rows)


def _quick() -> bool:
    from bench._harness import quick

    return quick()


def tables() -> list[Table]:
    return [closed_table(), open_table(), async_table()]
