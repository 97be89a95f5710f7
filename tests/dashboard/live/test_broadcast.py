from __future__ import annotations

import asyncio

from dashboard.live.broadcast import Broadcaster
from resilience.events import BreakerStateChanged, CallRejected
from tests.clock import FakeClock


def changed(name: str) -> BreakerStateChanged:
    return BreakerStateChanged(
        name=name, time=0.0, from_state="closed", to_state="open", reason="x"
    )


def attached(clock: FakeClock) -> Broadcaster:
    # Attach to the running loop without starting the task, so the test drives _take_due.
    broadcaster = Broadcaster(min_interval=0.1, clock=clock)
    broadcaster._loop = asyncio.get_running_loop()
    broadcaster._wake = asyncio.Event()
    return broadcaster


def test_events_are_ignored_while_no_page_is_connected() -> None:
    broadcaster = Broadcaster()
    broadcaster.on_event(changed("a"))
    assert broadcaster.events == 0


async def test_first_change_is_due_at_once_and_repeats_are_coalesced() -> None:
    clock = FakeClock(100.0)
    broadcaster = attached(clock)
    for _ in range(50):
        broadcaster.on_event(changed("a"))
    broadcaster.on_event(changed("b"))
    broadcaster.on_event(CallRejected(name="a", time=0.0, state="open", remaining=1.0))
    await asyncio.sleep(0)  # the wake-up is scheduled with call_soon_threadsafe
    assert broadcaster._wake is not None and broadcaster._wake.is_set()
    due, wait = broadcaster._take_due()
    assert due == ["a", "b"] and wait is None
    assert broadcaster.events == 51 and broadcaster.coalesced == 49


async def test_a_breaker_is_pushed_at_most_once_per_interval() -> None:
    clock = FakeClock(100.0)
    broadcaster = attached(clock)
    broadcaster.mark("a")
    assert broadcaster._take_due()[0] == ["a"]
    clock.now += 0.04
    broadcaster.mark("a")
    due, wait = broadcaster._take_due()
    assert due == [] and wait is not None and abs(wait - 0.06) < 1e-9
    clock.now += 0.06
    assert broadcaster._take_due() == (["a"], None)
