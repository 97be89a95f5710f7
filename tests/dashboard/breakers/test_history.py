"""Breaker transitions land in BreakerEvent rows, written off the caller's thread."""

from __future__ import annotations

import threading

import pytest

from dashboard import runtime
from dashboard.breakers import recorder
from dashboard.breakers.models import BreakerEvent
from resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from resilience.events import BreakerStateChanged, CallRejected, bus

pytestmark = pytest.mark.django_db(transaction=True)


def _fail() -> None:
    raise ConnectionError("refused")


def test_published_transition_is_written_with_every_field() -> None:
    bus.publish(
        BreakerStateChanged(
            name="payments",
            time=1_700_000_000.5,
            from_state="open",
            to_state="closed",
            reason="manual reset",
            failure_count=4,
            failure_rate=50.0,
            actor="alice",
            note="deploy fixed it",
        )
    )
    assert recorder.flush()
    row = BreakerEvent.objects.get()
    assert (row.breaker, row.from_state, row.to_state) == ("payments", "open", "closed")
    assert (row.reason, row.failure_count, row.failure_rate) == ("manual reset", 4, 50.0)
    assert (row.actor, row.note, row.manual) == ("alice", "deploy fixed it", True)
    assert row.occurred_at.timestamp() == 1_700_000_000.5
    assert row.process == runtime.identity().process


def test_other_events_are_not_recorded() -> None:
    bus.publish(CallRejected(name="payments", time=1.0, state="open", remaining=1.0))
    assert recorder.flush()
    assert not BreakerEvent.objects.exists()


def test_a_real_breaker_records_each_transition_and_the_manual_reset(clock) -> None:
    breaker = CircuitBreaker(
        "search",
        CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=5),
        clock=clock,
    )
    caller = threading.current_thread().name
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)
    breaker.reset(actor="bob", reason="checked by hand")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)
    clock.advance(5)
    assert breaker.call(lambda: "ok") == "ok"
    assert recorder.flush()
    rows = list(BreakerEvent.objects.filter(breaker="search").order_by("occurred_at", "id"))
    assert [(r.from_state, r.to_state) for r in rows] == [
        ("closed", "open"),
        ("open", "closed"),
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert rows[0].failure_count == 2
    assert (rows[1].actor, rows[1].note) == ("bob", "checked by hand")
    assert not rows[3].manual
    # The insert ran on the recorder's worker thread, not the caller's.
    assert recorder.dispatcher()._thread.name != caller


def test_full_queue_drops_and_counts_instead_of_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    from resilience.dispatch import BatchDispatcher

    gate = threading.Event()
    written: list[int] = []

    def blocked(rows: list[BreakerEvent]) -> None:
        gate.wait(5)
        written.append(len(rows))

    small: BatchDispatcher[BreakerEvent] = BatchDispatcher(blocked, max_queue=1, max_batch=1)
    monkeypatch.setattr(recorder, "_dispatcher", small)
    event = BreakerStateChanged(
        name="x", time=1.0, from_state="closed", to_state="open", reason="r"
    )
    for _ in range(20):
        bus.publish(event)  # must return at once even though the writer is stuck
    assert recorder.stats()["dropped"] >= 18
    gate.set()
    small.shutdown()
