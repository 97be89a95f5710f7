"""The workflow engine: traces, checkpoints, resume, and degradation behind breakers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from dashboard.traces import tracing
from dashboard.workflows.definition import AGENT_ID, STEPS, Run
from dashboard.workflows.engine import WorkflowBusy, WorkflowEngine, default_breaker_config
from dashboard.workflows.simulated import Pattern, ServiceWorld
from resilience import telemetry
from resilience.checkpoint import StateCheckpointManager
from resilience.circuit_breaker import CircuitBreaker, CircuitState
from resilience.errors import ConfigValueError
from resilience.events import BreakerStateChanged, Event
from tests.dashboard.conftest import FakeClock

# Spans of these tests go to the traces app's processor too, whose worker writes rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _spans_written() -> Iterator[None]:
    """Spans of this test are stored before its tables are emptied."""
    yield
    installed = tracing.processor()
    if installed is not None:
        installed.force_flush()


FAST = {
    "search-api": Pattern(latency_ms=10.0),
    "llm": Pattern(latency_ms=20.0),
    "payments": Pattern(latency_ms=10.0),
}
EXTERNAL_CALLS = sum(1 for step in STEPS if step.service)


class Recorder:
    """A Progress that keeps a copy of every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def started(self, run: Run) -> None:
        self.reports.append(("started", run.to_dict()))

    def step_done(self, run: Run) -> None:
        self.reports.append(("step", run.to_dict()))

    def finished(self, run: Run) -> None:
        self.reports.append(("finished", run.to_dict()))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(tracer_provider=provider)
    yield exporter
    telemetry.configure()


@pytest.fixture
def world(clock: FakeClock) -> ServiceWorld:
    # Latency advances the fake clock: time passes only as the services answer.
    return ServiceWorld(FAST, clock=clock, sleep=clock.advance, seed=1)


@pytest.fixture
def breakers(clock: FakeClock) -> dict[str, CircuitBreaker]:
    return {name: CircuitBreaker(name, default_breaker_config(), clock=clock) for name in FAST}


@pytest.fixture
def manager(tmp_path: Path) -> StateCheckpointManager:
    return StateCheckpointManager(tmp_path / "checkpoints")


@pytest.fixture
def engine(
    world: ServiceWorld,
    breakers: dict[str, CircuitBreaker],
    manager: StateCheckpointManager,
    clock: FakeClock,
) -> WorkflowEngine:
    return WorkflowEngine(
        world, manager=manager, progress=Recorder(), checkpoint_interval=3, clock=clock
    )


def test_a_healthy_run_completes_every_step_in_one_trace_with_a_span_per_step_and_call(
    engine: WorkflowEngine, spans: InMemorySpanExporter
) -> None:
    run = engine.execute("order-1")
    assert (run.status, run.step, run.start_step, run.resumed_from) == (
        "succeeded",
        len(STEPS),
        0,
        None,
    )
    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {run.trace_id}
    names = [s.name for s in finished]
    assert names.count("workflow.execute") == 1
    for step in STEPS:
        assert f"{step.agent}.{step.name}" in names
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(clients) == EXTERNAL_CALLS
    assert {s.attributes["peer.service"] for s in clients} == set(FAST)  # type: ignore[index]


def test_checkpoints_are_saved_every_n_steps_and_at_the_end(
    engine: WorkflowEngine, manager: StateCheckpointManager
) -> None:
    run = engine.execute("order-2")
    saved = manager.list_checkpoints(agent_id=AGENT_ID, workflow_id="order-2")
    # After steps 3, 6 and 9, then the end of the run once (not after step 12 as well).
    assert len(STEPS) == 12
    assert [c["metadata"]["step"] for c in reversed(saved)] == [3, 6, 9, 12]
    assert saved[0]["metadata"]["status"] == run.status == "succeeded"
    assert run.last_checkpoint_id == saved[0]["checkpoint_id"]
    final = manager.load_checkpoint(saved[0]["checkpoint_id"])
    assert final["status"] == "completed" and final["next_step"] == len(STEPS)
    steps_seen = [r["step"] for kind, r in engine.progress.reports if kind == "step"]  # type: ignore[attr-defined]
    assert steps_seen == list(range(1, len(STEPS) + 1))


def test_a_run_resumes_from_the_latest_checkpoint_of_an_unfinished_workflow(
    engine: WorkflowEngine, manager: StateCheckpointManager, world: ServiceWorld
) -> None:
    state = {
        "version": 1,
        "workflow_id": "order-3",
        "status": "running",
        "next_step": 6,
        "results": {"make_plan": {"budget": 25}},
        "degraded": ["search_details"],
        "executions": 1,
    }
    checkpoint_id = manager.save_checkpoint(state, AGENT_ID, "order-3")
    run = engine.execute("order-3")
    assert (run.resumed_from, run.start_step, run.status) == (checkpoint_id, 6, "degraded")
    assert run.degraded_steps == ["search_details"]
    # Only the calls of steps 6.. were made: the first steps were not run again.
    assert world.snapshot()[1]["calls"] == sum(1 for s in STEPS[6:] if s.service == "llm")


def test_a_completed_workflow_executed_again_starts_from_step_zero(
    engine: WorkflowEngine,
) -> None:
    engine.execute("order-4")
    again = engine.execute("order-4")
    assert (again.start_step, again.resumed_from, again.status) == (0, None, "succeeded")


def test_a_down_search_api_degrades_the_run_with_fallbacks(
    engine: WorkflowEngine, world: ServiceWorld, spans: InMemorySpanExporter
) -> None:
    world.set_pattern("search-api", Pattern(mode="down", latency_ms=5.0))
    run = engine.execute("order-5")
    assert run.status == "degraded"
    assert run.degraded_steps == ["search_sources", "search_details", "lookup_reference"]
    assert run.step == len(STEPS)
    fallback_steps = [
        s for s in spans.get_finished_spans() if s.attributes.get("workflow.fallback")
    ]  # type: ignore[union-attr]
    assert len(fallback_steps) == 3


def test_payments_down_opens_the_breaker_fails_cleanly_and_recovers_through_half_open(
    engine: WorkflowEngine,
    world: ServiceWorld,
    breakers: dict[str, CircuitBreaker],
    clock: FakeClock,
) -> None:
    transitions: list[tuple[str, str]] = []

    def listen(event: Event) -> None:
        if isinstance(event, BreakerStateChanged):
            transitions.append((event.from_state, event.to_state))

    payments = breakers["payments"]
    payments.add_listener(listen)
    world.set_pattern("payments", Pattern(mode="down", latency_ms=10.0))

    failed = [engine.execute(f"pay-{n}") for n in range(3)]
    for run in failed:
        assert run.status == "failed"
        assert run.step == 6 and run.agent == "tool_caller"
        assert "payments unavailable" in run.error
    assert payments.state is CircuitState.OPEN

    calls_before = world.snapshot()[2]["calls"]
    rejected = engine.execute("pay-3")
    assert rejected.status == "failed"
    assert "open" in rejected.error and rejected.retry_after is not None
    assert 0 < rejected.retry_after <= 5.0
    assert world.snapshot()[2]["calls"] == calls_before  # the open breaker spared the service

    world.restore("payments")
    clock.advance(5.0)
    assert payments.state is CircuitState.HALF_OPEN
    resumed = engine.execute("pay-0")  # one successful trial call
    assert (resumed.status, resumed.start_step) == ("succeeded", 6)
    assert resumed.resumed_from == failed[0].last_checkpoint_id
    assert payments.state is CircuitState.HALF_OPEN
    assert engine.execute("pay-1").status == "succeeded"  # second trial call
    assert payments.state is CircuitState.CLOSED
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_workflow_cannot_run_twice_at_once_in_a_process(engine: WorkflowEngine) -> None:
    seen: list[str] = []

    class Reentrant(Recorder):
        def started(self, run: Run) -> None:
            with pytest.raises(WorkflowBusy, match="already running"):
                engine.execute(run.workflow_id)
            seen.append(run.workflow_id)

    engine.progress = Reentrant()
    assert engine.execute("order-6").status == "succeeded"
    assert seen == ["order-6"]
    assert engine.running() == []


@pytest.mark.parametrize("bad", ["", "../etc", "a b", "x" * 129, "-lead"])
def test_invalid_workflow_ids_are_refused_naming_the_field(
    engine: WorkflowEngine, bad: str
) -> None:
    with pytest.raises(ConfigValueError, match="workflow_id must be"):
        engine.execute(bad)


def test_an_unreadable_latest_checkpoint_means_a_fresh_start(
    engine: WorkflowEngine, manager: StateCheckpointManager
) -> None:
    manager.save_checkpoint({"something": "else"}, AGENT_ID, "order-7")
    run = engine.execute("order-7")
    assert (run.start_step, run.resumed_from, run.status) == (0, None, "succeeded")
