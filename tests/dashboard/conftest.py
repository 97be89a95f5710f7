from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashboard.breakers import recorder
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.events import bus
from resilience.rate_limiter import rate_limiter_registry


@pytest.fixture(autouse=True)
def _empty_registries() -> Iterator[None]:
    """Each test sees only the breakers and limiters it creates."""
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()
    yield
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()


def _transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return "transactional_db" in request.fixturenames or bool(
        marker is not None and marker.kwargs.get("transaction")
    )


@pytest.fixture(autouse=True)
def _breaker_recorder(request: pytest.FixtureRequest) -> Iterator[None]:
    """The recorder writes from its own thread, on its own connection.

    Inside a test's transaction that write would wait on the test's lock and land
    after the rollback, leaking rows into later tests; so only transactional tests
    (which commit) keep it, and it is drained before their tables are flushed.
    """
    if _transactional(request):
        yield
        recorder.flush()
        return
    bus.unsubscribe(recorder.on_event)
    try:
        yield
    finally:
        bus.subscribe(recorder.on_event)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
