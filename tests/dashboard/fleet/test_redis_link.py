"""The fleet over Redis, the dashboard's side, against a real redis-server.

Real :class:`FleetReporter`\\ s with a :class:`RedisTransport` talk to real
:class:`RedisLink`\\ s (two of them where several servers matter), driven step by step
(``report_once``, ``read``, ``process``) so that nothing waits for time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.test import Client

from dashboard.api import testing
from dashboard.breakers.models import BreakerEvent
from dashboard.fleet import runtime, services
from dashboard.fleet.models import CommandStatus, FleetCommand, FleetInstance
from dashboard.fleet.redis_link import RedisLink
from resilience.events import EventBus
from resilience.fleet import FleetReporter, instance_info
from resilience.fleet.protocol import REDIS_GROUP, REDIS_REPORTS_KEY, redis_commands_key
from resilience.fleet.redis_transport import RedisTransport
from tests.dashboard.fleet.test_fleet import ClientTransport
from tests.resilience._fleet_fixtures import open_breaker
from tests.resilience._redis_fixtures import redis_server  # noqa: F401
from tests.resilience.redis_server import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:  # noqa: F811
    client = redis.Redis.from_url(redis_server.url)
    client.delete(REDIS_REPORTS_KEY)
    yield client
    client.close()


class Link(RedisLink):
    """A link whose Fleet-page notifications are counted."""

    def __init__(self, url: str, consumer: str) -> None:
        super().__init__(redis.Redis.from_url(url), consumer=consumer, block=0.01)
        self.notified = 0
        self.names: list[set[str]] = []
        self._notify = self._count

    def _count(self, names: set[str]) -> None:
        self.notified += 1
        self.names.append(names)

    def step(self) -> int:
        return self.process(self.read())


@pytest.fixture
def links(client_redis: redis.Redis, redis_server: RedisServer) -> Iterator[list[Link]]:  # noqa: F811
    made = [Link(redis_server.url, "server-a"), Link(redis_server.url, "server-b")]
    for link in made:
        link.ensure_group()
    yield made
    runtime.install(None)
    for link in made:
        link.client.close()


@pytest.fixture
def operator() -> Any:
    return testing.make_user(
        "olga", "dashboard.view_dashboard", "breakers.reset_breaker", "breakers.operate_breaker"
    )


def worker(url: str, service: str = "planner") -> FleetReporter:
    return FleetReporter(
        RedisTransport(url), instance=instance_info(service=service), event_bus=EventBus()
    )


def test_a_redis_report_is_stored_with_its_transitions_and_the_pages_told_once(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    reporter = worker(redis_server.url)
    reporter._bus.subscribe(reporter._on_event)
    open_breaker("payments", reporter._bus)
    assert reporter.report_once()
    assert reporter.report_once()
    link = links[0]
    assert link.step() == 2
    instance = FleetInstance.objects.get(instance_id=reporter.instance["id"])
    assert (instance.transport, instance.reports, instance.last_seq) == ("redis", 2, 2)
    assert [b["state"] for b in instance.breakers] == ["open"]
    assert BreakerEvent.objects.get(breaker="payments").process == instance.label
    assert link.notified == 1  # one batch with a transition: one notification
    assert link.names == [{"payments"}]
    assert link.client.xpending(REDIS_REPORTS_KEY, REDIS_GROUP)["pending"] == 0


def test_several_servers_in_the_group_store_each_report_exactly_once(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    reporter = worker(redis_server.url)
    stored = []
    for round_ in range(6):
        assert reporter.report_once()
        stored.append(links[round_ % 2].step())
        assert links[(round_ + 1) % 2].step() == 0  # nothing left for the other
    assert stored == [1] * 6
    services.flush_seen()  # quiet reports' counts are written in batches
    assert FleetInstance.objects.get(instance_id=reporter.instance["id"]).reports == 6
    assert links[0].reports == links[1].reports == 3


def test_a_reset_is_pushed_to_a_redis_worker_at_commit_and_acked_through_redis(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
    operator: Any,
    client: Client,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    breaker = open_breaker("search")
    redis_worker = worker(redis_server.url)
    http_worker = FleetReporter(
        ClientTransport(client, testing.token_for(testing.make_user("w", "fleet.report_fleet"))),
        instance=instance_info(service="tools"),
        event_bus=EventBus(),
    )
    assert redis_worker.report_once() and http_worker.report_once()
    links[0].step()
    runtime.install(links[1])  # the server that handles the click

    with django_capture_on_commit_callbacks(execute=True):
        acted = services.act_on_fleet_breaker(
            name="search", action="reset", user=operator, reason="fixed", source="api"
        )
    assert sorted(acted["instances"]) == sorted(
        [redis_worker.instance["id"], http_worker.instance["id"]]
    )
    assert links[1].pushed == 1  # only the Redis instance gets a push
    mine = FleetCommand.objects.get(instance__instance_id=redis_worker.instance["id"])
    assert mine.status == CommandStatus.DELIVERED

    transport = redis_worker.transport
    assert isinstance(transport, RedisTransport)
    (pushed,) = transport.receive(redis_worker.instance["id"], 0.01)
    assert pushed["commands"][0]["id"] == str(mine.pk)
    redis_worker._pushed.append(pushed)
    assert redis_worker.report_once()  # applies it and carries the ack
    assert breaker.state.value == "closed"
    assert links[0].step() == 1
    mine.refresh_from_db()
    assert (mine.status, mine.result_state) == (CommandStatus.APPLIED, "closed")
    assert links[0].names == [{"search"}]  # the ack names its command's breaker
    other = FleetCommand.objects.get(instance__instance_id=http_worker.instance["id"])
    assert other.status == CommandStatus.PENDING  # it waits for the HTTP worker's report


def test_a_command_not_pushed_goes_out_after_the_next_report_until_acked(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
    operator: Any,
) -> None:
    breaker = open_breaker("search")
    reporter = worker(redis_server.url)
    assert reporter.report_once()
    links[0].step()
    # No link installed in this process (or Redis refused the push): nothing pushed.
    services.act_on_fleet_breaker(name="search", action="force_open", user=operator, source="t")
    transport = reporter.transport
    assert isinstance(transport, RedisTransport)
    assert transport.receive(reporter.instance["id"], 0.01) == []
    assert reporter.report_once()
    links[1].step()  # the report's answer has the waiting command: pushed
    (answer,) = transport.receive(reporter.instance["id"], 0.01)
    reporter._pushed.append(answer)
    assert reporter.report_once()
    assert breaker.state.value == "forced_open"
    links[0].step()
    assert FleetCommand.objects.get().status == CommandStatus.APPLIED
    assert reporter.report_once()
    links[1].step()
    assert transport.receive(reporter.instance["id"], 0.01) == []  # acked: not again


def test_hostile_redis_reports_are_dropped_counted_and_acknowledged(
    links: list[Link],
    client_redis: redis.Redis,
    settings: Any,
) -> None:
    settings.FLEET_MAX_REPORT_BYTES = 2000
    for body in (
        b"not json",
        b"[" * 100_000,
        json.dumps({"protocol": 2}).encode(),
        b'{"protocol": 1, "instance": "\\u0000"}',
        b"x" * 3000,
    ):
        client_redis.xadd(REDIS_REPORTS_KEY, {"report": body})
    client_redis.xadd(REDIS_REPORTS_KEY, {"something": "else"})
    link = links[0]
    assert link.step() == 0
    assert link.rejected == 6
    assert not FleetInstance.objects.exists()
    assert link.client.xpending(REDIS_REPORTS_KEY, REDIS_GROUP)["pending"] == 0


def test_the_group_is_created_again_when_redis_lost_it(
    links: list[Link],
    client_redis: redis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    reporter = worker(redis_server.url)
    client_redis.delete(REDIS_REPORTS_KEY)  # as after a restart of an empty Redis
    link = links[0]
    assert link.read() == []  # NOGROUP: noted
    assert reporter.report_once()  # before the group exists again: skipped, it is complete
    assert link.read() == []  # the group is back, from now on
    assert reporter.report_once()
    assert link.step() == 1


def test_a_push_to_a_dead_redis_is_false_and_counted() -> None:
    link = RedisLink(redis.Redis(port=1, socket_connect_timeout=0.2), consumer="x")
    assert link.push("i-1", {"protocol": 1, "commands": []}) is False
    assert link.errors == 1


def test_runtime_start_needs_redis_url_and_its_thread_consumes_reports(
    settings: Any,
    redis_server: RedisServer,  # noqa: F811
    client_redis: redis.Redis,
) -> None:
    settings.REDIS_URL = ""
    assert runtime.start() is None and runtime.current() is None
    settings.REDIS_URL = redis_server.url
    link = runtime.start()
    try:
        assert link is not None and link.running and runtime.start() is link
        deadline = time.monotonic() + 10
        while not link._group_ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link._group_ready
        client_redis.xadd(REDIS_REPORTS_KEY, {"report": b"not json"})
        while link.rejected == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.rejected == 1
    finally:
        runtime.stop()
    assert runtime.current() is None and not link.running
    assert client_redis.exists(redis_commands_key("none")) == 0


def test_run_agents_with_a_redis_url_reports_through_redis_without_a_token(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    import io

    from django.core.management import call_command

    from dashboard.api.models import ApiToken
    from resilience.circuit_breaker import circuit_breaker_registry

    out = io.StringIO()
    # --no-traces: the reports need no token over Redis; spans (to /v1/traces) would.
    call_command(
        "run_agents", "--service", "tools", "--redis-url", redis_server.url,
        "--seconds", "0.3", "--no-traces", "--no-workflows", stdout=out,
    )  # fmt: skip
    circuit_breaker_registry.clear()
    assert "RedisTransport redis://127.0.0.1" in out.getvalue()
    assert links[0].step() >= 1
    assert FleetInstance.objects.get(service="tools").transport == "redis"
    assert not ApiToken.objects.exists()


# -- checkpoint metadata through Redis ---------------------------------------------------


def test_checkpoint_metadata_goes_through_redis_and_is_owned_by_the_service(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Any,
    settings: Any,
) -> None:
    from dashboard.checkpoints import store
    from dashboard.checkpoints.models import Checkpoint
    from dashboard.fleet.models import FleetCheckpoint
    from resilience.checkpoint import StateCheckpointManager
    from resilience.fleet.checkpoints import forward

    settings.MEDIA_ROOT = tmp_path / "media"
    reporter = worker(redis_server.url, service="planner")
    manager = StateCheckpointManager(
        tmp_path / "media" / "checkpoints", signing_key=store.signing_key()
    )
    forwarder = forward(manager, reporter=reporter)  # the reporter's way: Redis
    forwarder.stop(0)  # driven step by step below
    try:
        first = manager.save_checkpoint({"n": 1}, "agent", "wf-1")
        forwarder._pending.append(first)
        assert forwarder.send_once() and forwarder.sent == 1
        assert links[0].step() == 0  # no report, one checkpoints entry
        assert links[0].checkpoints == 1
        row = Checkpoint.objects.get(pk=first)
        assert row.workflow_id == "wf-1"
        owner = FleetCheckpoint.objects.get(pk=first)
        assert (owner.service, owner.user, owner.transport) == ("planner", None, "redis")
        assert store.build_manager().verify_checkpoint(first)  # the blob is readable

        # Another service's worker cannot add to planner's workflow through Redis either.
        other = worker(redis_server.url, service="tools")
        intruder = forward(manager, reporter=other)
        intruder.stop(0)
        second = manager.save_checkpoint({"n": 2}, "agent", "wf-1")
        intruder._pending.append(second)
        assert intruder.send_once()
        links[0].step()
        assert links[0].rejected == 1
        assert not Checkpoint.objects.filter(pk=second).exists()
        assert links[0].client.xpending(REDIS_REPORTS_KEY, REDIS_GROUP)["pending"] == 0
    finally:
        manager.close()


def test_reports_with_transitions_are_stored_and_pushed_before_the_others(
    links: list[Link],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    quiet = [worker(redis_server.url, service=f"s{n}") for n in range(3)]
    flipping = worker(redis_server.url)
    flipping._bus.subscribe(flipping._on_event)
    open_breaker("payments", flipping._bus)
    for reporter in quiet[:2]:
        assert reporter.report_once()
    assert flipping.report_once()
    assert quiet[2].report_once()
    link = links[0]
    stored_at_push: list[int] = []
    link._notify = lambda names: stored_at_push.append(FleetInstance.objects.count())
    assert link.step() == 4
    assert stored_at_push == [1]  # pushed when only the transition's report was stored


class _AckOnly:
    """The link's client for :meth:`RedisLink.process` alone (nothing but XACK)."""

    def xack(self, *args: Any) -> int:
        return len(args) - 2


@pytest.mark.django_db
def test_an_urgent_report_is_never_stored_before_an_older_report_of_its_instance() -> None:
    """Routine N then urgent N+1 in one batch: urgent reports go first, but N must not
    be stored after N+1 (its snapshot would put the breaker back to CLOSED)."""
    from resilience.fleet.protocol import REDIS_REPORT_FIELD
    from tests.dashboard.fleet.test_fleet import T0, report_body

    services.memory.clear()
    link = RedisLink(_AckOnly(), consumer="x", block=0.01)  # type: ignore[arg-type]
    link._notify = lambda names: None  # type: ignore[method-assign]
    older = report_body(seq=5, breakers=[{"name": "search", "state": "closed", "calls": {}}])
    opened = {"kind": "breaker_state", "name": "search", "from_state": "closed"}
    newer = report_body(
        seq=6,
        sent_at=T0.timestamp() + 1,
        breakers=[{"name": "search", "state": "open", "calls": {}}],
        events=[opened | {"to_state": "open", "time": T0.timestamp() + 1}],
    )
    field = REDIS_REPORT_FIELD.encode()
    entries = [
        (b"1-0", {field: json.dumps(older).encode()}),
        (b"2-0", {field: json.dumps(newer).encode()}),
    ]
    assert link.process(entries) == 2
    row = FleetInstance.objects.get(instance_id="i-1")
    assert (row.last_seq, row.breakers[0]["state"]) == (6, "open")
