from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from resilience.events import bus


@pytest.fixture(autouse=True, scope="module")
def _no_dashboard_listeners() -> Iterator[None]:
    """Under the full suite Django is loaded and its recorder listens on the bus.

    The runtime's tests publish thousands of events with no database; detach the
    dashboard's listener for them (the dashboard's own tests cover it).
    """
    recorder = sys.modules.get("dashboard.breakers.recorder")
    if recorder is not None:
        bus.unsubscribe(recorder.on_event)
    yield
    if recorder is not None:
        bus.subscribe(recorder.on_event)
