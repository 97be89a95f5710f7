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


# -- subscriptions by event type -----------------------------------------------------------


def test_a_typed_listener_gets_only_its_types_and_the_bus_knows_what_is_wanted() -> None:
    from resilience.events import BreakerStateChanged, CallRejected, EventBus

    local = EventBus()
    got: list[object] = []
    everything: list[object] = []
    assert not local.wants(CallRejected)
    stop = local.subscribe(got.append, types=(BreakerStateChanged,))
    changed = BreakerStateChanged(
        name="b", time=1.0, from_state="closed", to_state="open", reason="r"
    )
    rejected = CallRejected(name="b", time=1.0, state="open", remaining=1.0)
    local.publish(changed)
    local.publish(rejected)
    assert got == [changed]
    assert local.wants(BreakerStateChanged) and not local.wants(CallRejected)
    assert CallRejected not in local._wanted and local.active
    local.subscribe(everything.append)
    assert local.wants(CallRejected)
    local.publish(rejected)
    assert got == [changed] and everything == [rejected]
    stop()
    local.unsubscribe(everything.append)
    assert not local.active and not local.wants(BreakerStateChanged)


def test_an_event_type_defined_after_subscribing_is_routed_by_isinstance() -> None:
    from dataclasses import dataclass

    from resilience.events import BreakerStateChanged, Event, EventBus

    local = EventBus()
    typed: list[object] = []
    anything: list[object] = []
    local.subscribe(typed.append, types=(BreakerStateChanged,))
    local.subscribe(anything.append)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Late(Event):
        pass

    late = Late(name="x", time=1.0)
    local.publish(late)
    assert typed == [] and anything == [late]
    assert local.wants(Late)


@pytest.mark.parametrize("types", [(), [object], (int,), "BreakerStateChanged", (None,)])
def test_types_must_be_a_non_empty_tuple_of_event_classes(types: object) -> None:
    from resilience.events import EventBus

    with pytest.raises(TypeError, match="types"):
        EventBus().subscribe(print, types=types)  # type: ignore[arg-type]


def test_a_rejected_call_builds_no_event_when_bus_listeners_want_other_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
    from resilience.errors import CircuitOpenError
    from resilience.events import BreakerStateChanged, CallRejected, bus

    built: list[object] = []
    original = CallRejected.__init__

    def counting(self: object, *args: object, **kwargs: object) -> None:
        built.append(kwargs.get("name"))
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CallRejected, "__init__", counting)
    breaker = CircuitBreaker("typed-bus", CircuitBreakerConfig(failure_threshold=1), register=False)
    transitions: list[object] = []
    saved = bus._subscriptions  # others' listeners (the dashboard's, under Django) step aside
    with bus._lock:
        bus._subscriptions = ()
        bus._rebuild()
    stop = bus.subscribe(transitions.append, types=(BreakerStateChanged,))
    try:
        with pytest.raises(OSError):
            breaker.call(_raise_oserror)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: None)
        assert built == [] and len(transitions) == 1
        rejections: list[object] = []
        stop_all = bus.subscribe(rejections.append, types=(CallRejected,))
        try:
            with pytest.raises(CircuitOpenError):
                breaker.call(lambda: None)
        finally:
            stop_all()
        assert built == ["typed-bus"] and len(rejections) == 1
    finally:
        stop()
        with bus._lock:
            bus._subscriptions = saved
            bus._rebuild()


def _raise_oserror() -> None:
    raise OSError("down")
