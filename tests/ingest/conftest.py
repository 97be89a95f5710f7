from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def dashboard_runtime() -> Iterator[None]:
    """A runtime in this (parent) process per test, as a server has one: its span
    pipeline owns the global TracerProvider before anything here traces, and a server
    forked from here starts its own."""
    from dashboard import runtime

    runtime.start(runtime.Features(live=False))
    yield
    runtime.stop()
