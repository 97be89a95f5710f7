"""Cluster mode on the dashboard side, without Redis: the switch, the recorder's
one-row-per-transition rule, per-process live groups and the sampler's process tag."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.test import override_settings

from dashboard import cluster, runtime
from dashboard.breakers import recorder
from dashboard.breakers.models import BreakerEvent
from dashboard.live import broadcast
from dashboard.live.broadcast import Broadcaster, group_suffix
from dashboard.live.sampler import Sampler
from resilience.circuit_breaker import CircuitBreaker, circuit_breaker_registry
from resilience.events import BreakerStateChanged
from resilience.redis import installed, uninstall


def transition(*, observed: bool) -> BreakerStateChanged:
    return BreakerStateChanged(
        name="svc", time=0.0, from_state="closed", to_state="open", reason="x", observed=observed
    )


@pytest.fixture
def back_to_memory() -> Any:
    yield
    uninstall()


@override_settings(REDIS_URL="")
def test_without_redis_url_the_dashboard_stays_in_memory(back_to_memory: None) -> None:
    assert cluster.start() is False
    assert installed() is None
    assert circuit_breaker_registry.factory is CircuitBreaker


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_with_redis_url_start_installs_redis_factories_without_connecting(
    back_to_memory: None,
) -> None:
    assert cluster.start() is True  # port 1: nothing listens, nothing may connect
    client = installed()
    assert client is not None
    assert client.connection_pool.connection_kwargs["port"] == 1
    assert circuit_breaker_registry.factory is not CircuitBreaker


@pytest.mark.django_db(transaction=True)
def test_the_recorder_writes_transitions_made_here_and_skips_observed_ones() -> None:
    recorder.on_event(transition(observed=True))
    recorder.on_event(transition(observed=False))
    assert recorder.flush(5.0)
    assert BreakerEvent.objects.filter(breaker="svc").count() == 1


def test_live_groups_get_a_process_suffix_only_in_cluster_mode() -> None:
    assert group_suffix(False, "host-1") == ""
    assert group_suffix(True, "web:01-42") == ".web-01-42"
    long = group_suffix(True, "h" * 200)
    assert len("live.overview" + long) < 100
    # The test settings have no REDIS_URL: one process, the plain group names.
    assert broadcast.group("breakers") == "live.breakers"


async def test_history_of_an_observed_transition_waits_for_its_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[list[str], float]] = []

    async def fake_history(self: Broadcaster, names: list[str], delay: float = 0.0) -> None:
        calls.append((names, delay))

    monkeypatch.setattr(Broadcaster, "_push_history", fake_history)
    monkeypatch.setattr(broadcast.fragments, "breaker_state", lambda snap, oob: "")
    monkeypatch.setattr(broadcast.fragments, "overview_chip", lambda snap, oob: "")
    CircuitBreaker("svc")
    CircuitBreaker("own")
    broadcaster = Broadcaster(observed_history_delay=0.5)
    broadcaster._loop = asyncio.get_running_loop()
    broadcaster._wake = asyncio.Event()
    broadcaster.on_event(transition(observed=True))
    broadcaster.on_event(
        BreakerStateChanged(name="own", time=0.0, from_state="closed", to_state="open", reason="")
    )
    await broadcaster.push(["svc", "own"])
    await asyncio.sleep(0)
    assert sorted(calls) == [(["own"], 0.0), (["svc"], 0.5)]
    assert broadcaster.pushes == 2


def test_samples_are_tagged_with_their_process() -> None:
    sample, _, _ = Sampler(Broadcaster()).sample()
    assert sample["process"] == runtime.identity().live_process
