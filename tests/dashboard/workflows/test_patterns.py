"""The Simulation page's choices reach the workers: stored, polled, applied once, acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dashboard.api.testing import make_user
from dashboard.fleet.models import FleetInstance
from dashboard.workflows import patterns, simulated
from dashboard.workflows.actions import CHOICES
from dashboard.workflows.models import PatternApplied, ServicePattern
from dashboard.workflows.patterns import Desired, PatternFollower
from dashboard.workflows.simulated import Pattern, ServiceUnavailable, ServiceWorld
from tests.clock import FakeClock


def _world(clock: FakeClock) -> ServiceWorld:
    return ServiceWorld(
        {
            "payments": Pattern(latency_ms=60.0, jitter_ms=20.0),
            "llm": Pattern(mode="flaky", latency_ms=120.0, failure_rate=0.1),
        },
        clock=clock,
        sleep=clock.advance,
        seed=1,
    )


class Store:
    """The table, in memory: what fetch reads and what acknowledge was told."""

    def __init__(self) -> None:
        self.rows: list[Desired] = []
        self.acks: list[list[Desired]] = []
        self.fail_fetch = False
        self.fail_ack = False
        self.reads = 0

    def fetch(self) -> list[Desired]:
        self.reads += 1
        if self.fail_fetch:
            raise ConnectionError("database is locked")
        return list(self.rows)

    def acknowledge(self, rows: Sequence[Desired]) -> None:
        if self.fail_ack:
            raise ConnectionError("database is locked")
        self.acks.append(list(rows))


def _follower(clock: FakeClock, store: Store, world: ServiceWorld) -> PatternFollower:
    return PatternFollower(
        world, fetch=store.fetch, acknowledge=store.acknowledge, clock=clock, interval=1.0
    )


def test_a_new_choice_is_applied_at_the_next_poll_once_and_acknowledged(
    clock: FakeClock,
) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    assert follower.poll() == [] and store.acks == []
    store.rows = [Desired(service="payments", choice="down", version=1)]
    clock.advance(0.5)
    assert follower.poll() == []  # not due yet: no read
    assert store.reads == 1 and world.pattern("payments").mode == "healthy"
    clock.advance(0.5)
    assert follower.poll() == store.rows
    # The preset keeps the service's own latency.
    assert world.pattern("payments") == Pattern(mode="down", latency_ms=60.0, jitter_ms=20.0)
    with pytest.raises(ServiceUnavailable):
        world.call("payments", "charge")
    assert store.acks == [store.rows]
    clock.advance(1.0)
    assert follower.poll() == [] and len(store.acks) == 1  # same version: nothing again


def test_default_restores_the_configured_pattern_of_this_worker(clock: FakeClock) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    store.rows = [Desired(service="llm", choice="down", version=1)]
    follower.poll()
    assert world.pattern("llm").mode == "down"
    store.rows = [Desired(service="llm", choice="default", version=2)]
    clock.advance(1.0)
    follower.poll()
    assert world.pattern("llm") == world.default("llm")
    assert follower.applied == {"llm": 2}


def test_a_limited_outage_applied_late_ends_when_it_would_have(clock: FakeClock) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    store.rows = [Desired(service="payments", choice="down-30s", version=3, age=25.0)]
    follower.poll()
    with pytest.raises(ServiceUnavailable):
        world.call("payments", "charge")
    clock.advance(5.0)  # 30 s after the operator chose it, not after this worker saw it
    assert world.call("payments", "charge")["service"] == "payments"


def test_an_unknown_service_or_preset_is_skipped_and_the_rest_applied(clock: FakeClock) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    store.rows = [
        Desired(service="search-api", choice="down", version=1),  # not in this world
        Desired(service="llm", choice="on-fire", version=1),
        Desired(service="payments", choice="slow", version=1),
    ]
    assert [row.service for row in follower.poll()] == ["payments"]
    assert world.pattern("payments").mode == "slow" and world.pattern("llm").mode == "flaky"


def test_a_failed_read_is_counted_and_the_next_poll_catches_up(clock: FakeClock) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    store.rows = [Desired(service="payments", choice="down", version=1)]
    store.fail_fetch = True
    assert follower.poll() == [] and follower.errors == 1
    store.fail_fetch = False
    clock.advance(1.0)
    assert len(follower.poll()) == 1 and world.pattern("payments").mode == "down"


def test_a_failed_acknowledgement_is_retried_at_the_next_poll(clock: FakeClock) -> None:
    world, store = _world(clock), Store()
    follower = _follower(clock, store, world)
    store.rows = [Desired(service="payments", choice="down", version=1)]
    store.fail_ack = True
    follower.poll()
    assert world.pattern("payments").mode == "down" and store.acks == []
    store.fail_ack = False
    clock.advance(1.0)
    assert follower.poll() == []  # nothing new to apply...
    assert store.acks == [store.rows]  # ...but the acknowledgement goes out now


def test_the_next_poll_is_due_after_the_interval(clock: FakeClock) -> None:
    follower = _follower(clock, Store(), _world(clock))
    assert follower.next_poll_in() == 0.0
    follower.poll()
    clock.advance(0.25)
    assert follower.next_poll_in() == pytest.approx(0.75)


def test_the_interval_must_be_positive(clock: FakeClock) -> None:
    store = Store()
    with pytest.raises(ValueError, match="interval"):
        PatternFollower(_world(clock), fetch=store.fetch, acknowledge=store.acknowledge, interval=0)


# ---- the database side ------------------------------------------------------------------


@pytest.mark.django_db
def test_each_choice_bumps_the_version_and_desired_reports_its_age() -> None:
    then = timezone.now() - timedelta(seconds=10)
    assert patterns.choose(service="payments", choice="down", actor="olga", now=then) == 1
    assert patterns.choose(service="payments", choice="default", actor="ivan", now=then) == 2
    (row,) = patterns.desired(now=then + timedelta(seconds=4))
    assert (row.service, row.choice, row.version, row.age) == ("payments", "default", 2, 4.0)
    assert ServicePattern.objects.get().changed_by == "ivan"


@pytest.mark.django_db
def test_appliers_say_which_workers_applied_the_current_choice_and_which_lag() -> None:
    version = patterns.choose(service="payments", choice="down", actor="olga")
    current = Desired(service="payments", choice="down", version=version)
    patterns.acknowledge(instance="a", label="planner@h:1", applied=[current])
    old = Desired(service="payments", choice="slow", version=version - 1 or 0)
    patterns.acknowledge(instance="b", label="tools@h:2", applied=[old])
    patterns.acknowledge(instance="c", label="tools@h:3", applied=[current])
    assert patterns.appliers(live={"a", "b"}) == {
        "payments": {"applied": ["planner@h:1"], "pending": ["tools@h:2"]}
    }
    patterns.acknowledge(instance="b", label="tools@h:2", applied=[current])
    assert PatternApplied.objects.count() == 3  # one row per worker and service


@pytest.mark.django_db(transaction=True)
def test_the_page_lists_the_workers_that_applied_a_choice_and_the_fleet_breaker(
    clock: FakeClock,
) -> None:
    previous = simulated.install(_world(clock))
    try:
        operator = make_user("olga", "dashboard.view_dashboard", "workflows.operate_simulation")
        client = Client()
        client.force_login(operator)
        response = client.post("/simulation/pattern/", {"service": "payments", "pattern": "down"})
        assert response.status_code == 302
        now = timezone.now()
        FleetInstance.objects.create(
            instance_id="worker-1",
            service="planner",
            host="h",
            pid=7,
            started_at=now,
            first_seen=now,
            last_seen=now,
            breakers=[{"name": "payments", "state": "open", "calls": {"rejected": 4}}],
        )
        (row,) = patterns.desired()
        patterns.acknowledge(instance="worker-1", label="planner@h:7", applied=[row])
        html = client.get("/simulation/panel/").content.decode()
        cells = html[html.index('data-service="payments"') :]
        cells = cells[: cells.index("</tr>")]
        assert 'data-fleet-state="open"' in cells and "planner@h:7" in cells
    finally:
        simulated.install(previous)


# ---- model-based: whatever the operator and the database do, the worker converges --------


class FollowerMachine(RuleBasedStateMachine):
    """The model: the stored choices. After a poll that could read, the world matches
    them; every version is applied at most once and acknowledged once reads and
    acknowledgements succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.world = _world(self.clock)
        self.store = Store()
        self.follower = _follower(self.clock, self.store, self.world)
        self.versions: dict[str, int] = {}
        self.applies: list[tuple[str, int]] = []

    @rule(service=st.sampled_from(["payments", "llm"]), choice=st.sampled_from(CHOICES))
    def operator_chooses(self, service: str, choice: str) -> None:
        self.versions[service] = self.versions.get(service, 0) + 1
        rows = [row for row in self.store.rows if row.service != service]
        rows.append(Desired(service=service, choice=choice, version=self.versions[service]))
        self.store.rows = rows

    @rule(fetch=st.booleans(), ack=st.booleans())
    def database_health(self, fetch: bool, ack: bool) -> None:
        self.store.fail_fetch, self.store.fail_ack = not fetch, not ack

    @rule(seconds=st.sampled_from([0.3, 1.0, 2.5]))
    def time_passes_and_the_worker_polls(self, seconds: float) -> None:
        self.clock.advance(seconds)
        due = self.follower.next_poll_in() == 0.0
        changed = self.follower.poll()
        self.applies.extend((row.service, row.version) for row in changed)
        if due and not self.store.fail_fetch:
            for row in self.store.rows:
                expected = world_after(row.service, row.choice, self.world)
                assert self.world.pattern(row.service) == expected
            if not self.store.fail_ack:
                acked = {(r.service, r.version) for batch in self.store.acks for r in batch}
                assert set(self.applies) <= acked

    @invariant()
    def each_version_is_applied_once(self) -> None:
        assert len(self.applies) == len(set(self.applies))

    @invariant()
    def acknowledged_versions_were_applied(self) -> None:
        acked = {(row.service, row.version) for batch in self.store.acks for row in batch}
        assert acked <= set(self.applies)


def world_after(service: str, choice: str, world: ServiceWorld) -> Pattern:
    base = world.default(service)
    return base if choice == "default" else simulated.preset(choice, base)


TestFollowerMachine = FollowerMachine.TestCase
TestFollowerMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
