"""What reading breakers through dashboard.selectors does, exactly as its docstring says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashboard import selectors
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    circuit_breaker_registry,
)
from resilience.events import BreakerStateChanged, Event
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db


@pytest.fixture
def opened() -> Iterator[tuple[CircuitBreaker, FakeClock, list[Event]]]:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "selector-read", CircuitBreakerConfig(failure_threshold=1, timeout=10), clock=clock
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    seen: list[Event] = []
    breaker.add_listener(seen.append)
    yield breaker, clock, seen
    circuit_breaker_registry.remove("selector-read")


def test_reading_an_open_breaker_before_its_timeout_changes_nothing(
    opened: tuple[CircuitBreaker, FakeClock, list[Event]],
) -> None:
    breaker, clock, seen = opened
    clock.advance(9.5)
    [row] = selectors.breaker_overview(history=0)
    card = selectors.card_for(breaker, history=0)
    assert row["state"] == CircuitState.OPEN.value
    assert card.state is CircuitState.OPEN
    assert row["seconds_until_half_open"] == pytest.approx(0.5)
    assert seen == []


def test_reading_an_open_breaker_after_its_timeout_applies_the_due_half_open_step_once(
    opened: tuple[CircuitBreaker, FakeClock, list[Event]],
) -> None:
    # The one effect the module doc declares: the lazy OPEN -> HALF_OPEN transition a
    # call would make, published like any other; reading again does nothing more.
    breaker, clock, seen = opened
    clock.advance(10)
    [row] = selectors.breaker_overview(history=0)
    assert row["state"] == CircuitState.HALF_OPEN.value
    changes = [e for e in seen if isinstance(e, BreakerStateChanged)]
    assert [(e.from_state, e.to_state) for e in changes] == [
        (CircuitState.OPEN, CircuitState.HALF_OPEN)
    ]
    selectors.breaker_overview(history=0)
    selectors.card_for(breaker, history=0)
    assert len(seen) == 1
    assert breaker.snapshot()["calls"] == {
        "successful": 0,
        "failed": 1,
        "rejected": 0,
        "ignored": 0,
        "slow": 0,
    }
