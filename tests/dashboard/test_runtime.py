"""The runtime: nothing starts at import or in ready(); start and stop are idempotent;
identity and cluster mode are computed at start; a stopped runtime leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from dashboard import runtime
from dashboard.alerts import sources
from dashboard.breakers import recorder
from dashboard.live import broadcast
from resilience.circuit_breaker import CircuitBreaker, circuit_breaker_registry
from resilience.events import bus
from resilience.redis import installed

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test process has imported and started plenty already.
PROBE = textwrap.dedent(
    """
    import threading
    before = threading.active_count()
    import django
    django.setup()  # every AppConfig.ready()
    import dashboard.asgi
    from dashboard import runtime
    from resilience.events import bus
    print(threading.active_count() - before, len(bus._listeners), runtime.current() is None)
    """
)


def _probe(extra_env: dict[str, str]) -> list[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "RESILIENCE_DEMO": "1",
        "CHECKPOINT_KEEP_LAST": "5",
        **extra_env,
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_importing_the_asgi_module_and_ready_start_no_thread_and_no_listener() -> None:
    # RESILIENCE_DEMO and a retention rule on: both used to start at import.
    threads, listeners, no_runtime = _probe({})
    assert threads == "0"
    assert listeners == "0"
    assert no_runtime == "True"


@pytest.fixture
def no_runtime() -> Iterator[None]:
    """Stop the test's runtime to exercise one of our own."""
    runtime.stop()
    yield
    runtime.stop()


def _listening() -> set[object]:
    return set(bus._listeners)


def test_start_and_stop_are_idempotent(no_runtime: None) -> None:
    features = runtime.Features(record_breakers=True, live=True, alert_sources=True, traces=False)
    first = runtime.start(features)
    assert runtime.start(features) is first
    assert first.start() is first
    assert {recorder.on_event, broadcast.broadcaster.on_event, sources.on_event} <= _listening()
    assert list(bus._listeners).count(recorder.on_event) == 1
    runtime.stop()
    runtime.stop()
    first.stop()
    assert runtime.current() is None
    assert not {recorder.on_event, broadcast.broadcaster.on_event, sources.on_event} & _listening()


def test_a_stopped_runtime_can_be_replaced_by_a_fresh_one(no_runtime: None) -> None:
    first = runtime.start(runtime.Features(traces=False))
    runtime.stop()
    second = runtime.start(runtime.Features(traces=False))
    assert second is not first
    assert list(bus._listeners).count(broadcast.broadcaster.on_event) == 1


def test_identity_is_computed_when_the_runtime_starts(no_runtime: None) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        started = runtime.start(runtime.Features.from_settings(serving=False, traces=False))
        assert started.identity is not None
        assert started.identity.cluster is True
        assert started.identity.pid == os.getpid()
        # Per-process live groups, and Redis factories (port 1: nothing connects).
        assert broadcast.group("breakers") == "live.breakers." + started.identity.live_process
        assert installed() is not None
        assert circuit_breaker_registry.factory is not CircuitBreaker
        runtime.stop()
    assert installed() is None
    assert circuit_breaker_registry.factory is CircuitBreaker
    started = runtime.start(runtime.Features.from_settings(serving=False, traces=False))
    assert started.identity is not None and started.identity.cluster is False
    assert broadcast.group("breakers") == "live.breakers"


def test_a_forked_child_builds_its_own_runtime_without_doubling_listeners(
    no_runtime: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = runtime.start(runtime.Features(traces=False))
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    assert runtime.current() is None  # forked: the child builds its own
    child = runtime.start(runtime.Features(traces=False))
    assert child is not first
    # The inherited listeners are replaced, not doubled (one history row per transition).
    assert list(bus._listeners).count(broadcast.broadcaster.on_event) == 1
    assert list(bus._listeners).count(sources.on_event) == 1


@override_settings(ALERTS_ENABLED=True, RESILIENCE_DEMO=True, CHECKPOINT_KEEP_LAST=3)
def test_the_server_features_follow_settings_and_a_worker_gets_none_of_them() -> None:
    server = runtime.Features.from_settings()
    assert (server.alerts, server.demo, server.retention, server.live) == (True, True, True, True)
    worker = runtime.Features.from_settings(serving=False)
    assert (worker.alerts, worker.demo, worker.retention, worker.live) == (False,) * 4


def test_the_test_settings_start_no_server_thread() -> None:
    features = runtime.Features.from_settings()
    assert (features.alerts, features.demo) == (False, False)


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_a_fresh_runtime_and_no_listener_is_left_behind(round_: int) -> None:
    current = runtime.current()
    assert current is not None
    assert list(bus._listeners).count(broadcast.broadcaster.on_event) == 1
    assert list(bus._listeners).count(sources.on_event) == 1
    assert recorder.on_event not in _listening()  # not transactional: not recording
    CircuitBreaker(f"leftover-{round_}")
    assert [b.name for b in circuit_breaker_registry.all()] == [f"leftover-{round_}"]
