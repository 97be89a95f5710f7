"""Fixtures of the fleet reporter's tests (HTTP and Redis): clean registries, a reporter
on a private event bus and a fake wall clock, a failing breaker, a command.

Import ``empty_registries`` by name too: an autouse fixture applies to the modules
that import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import resilience.fleet as fleet
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker_registry,
)
from resilience.events import EventBus
from resilience.fleet import FleetReporter, instance_info
from resilience.rate_limiter import rate_limiter_registry
from tests.clock import FakeClock

__all__ = ["command", "empty_registries", "fail", "make", "open_breaker"]


@pytest.fixture(autouse=True)
def empty_registries() -> Iterator[None]:
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()
    yield
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()
    fleet.disconnect(timeout=2)


def make(transport: Any, *, bus: EventBus | None = None, **kwargs: Any) -> FleetReporter:
    clock = FakeClock()
    return FleetReporter(
        transport,
        instance=instance_info(service="planner", started_at=clock.wall()),
        wall_clock=clock.wall,
        event_bus=bus or EventBus(),
        **kwargs,
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    def boom() -> None:
        raise OSError("down")

    for _ in range(times):
        with pytest.raises(OSError):
            breaker.call(boom)


def open_breaker(name: str, bus: EventBus | None = None) -> CircuitBreaker:
    """A breaker opened by one failure (its transitions also published on ``bus``)."""
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1, timeout=3600))
    if bus is not None:
        breaker.add_listener(bus.publish)
    fail(breaker, 1)
    return breaker


def command(action: str = "reset", target: str = "pay", command_id: str = "c1") -> dict[str, Any]:
    return {
        "id": command_id,
        "kind": "breaker",
        "target": target,
        "action": action,
        "actor": "olga",
        "reason": "drill",
    }
