from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry


@pytest.fixture(autouse=True)
def _empty_registries() -> Iterator[None]:
    """Each test sees only the breakers and limiters it creates."""
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()
    yield
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()


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
