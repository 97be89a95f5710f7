from __future__ import annotations

import pytest

from resilience.events import BreakerStateChanged, CallRejected, EventBus


def _event(name: str = "svc") -> CallRejected:
    return CallRejected(name=name, time=1.0, state="open", remaining=3.0)


def test_bus_delivers_to_every_listener_in_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(lambda e: seen.append(("a", e.name)))
    bus.subscribe(lambda e: seen.append(("b", e.name)))
    bus.publish(_event("x"))
    assert seen == [("a", "x"), ("b", "x")]


def test_bus_is_inactive_without_listeners_and_after_unsubscribe() -> None:
    bus = EventBus()
    assert not bus.active
    unsubscribe = bus.subscribe(lambda e: None)
    assert bus.active
    unsubscribe()
    assert not bus.active
    unsubscribe()  # a second call is harmless


def test_failing_listener_is_counted_and_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.name))
    bus.publish(_event("y"))
    assert seen == ["y"]
    assert bus.listener_errors == 1
    assert "boom" in caplog.text


def test_subscribe_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="listener must be callable"):
        EventBus().subscribe("nope")  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    event = BreakerStateChanged(
        name="svc", time=0.0, from_state="closed", to_state="open", reason="r"
    )
    with pytest.raises(AttributeError):
        event.to_state = "closed"  # type: ignore[misc]
