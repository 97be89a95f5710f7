"""The load generator: steady starts, bursts the limiter rejects, resumed failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from dashboard.traces import tracing
from dashboard.workflows import gate
from dashboard.workflows.engine import WorkflowEngine, default_breaker_config
from dashboard.workflows.loadgen import LoadConfig, LoadGenerator
from dashboard.workflows.models import RunStatus, WorkflowRun
from dashboard.workflows.progress import RunRecorder
from dashboard.workflows.simulated import SERVICE_NAMES, Pattern, ServiceWorld
from resilience.checkpoint import StateCheckpointManager
from resilience.circuit_breaker import CircuitBreaker
from resilience.errors import ConfigValueError
from tests.dashboard.conftest import FakeClock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _spans_written() -> Iterator[None]:
    """Spans of this test are stored before its tables are emptied."""
    yield
    installed = tracing.processor()
    if installed is not None:
        installed.force_flush()


@pytest.fixture
def world(clock: FakeClock) -> ServiceWorld:
    return ServiceWorld(
        {name: Pattern(latency_ms=1.0) for name in SERVICE_NAMES},
        clock=clock,
        sleep=clock.advance,
    )


@pytest.fixture
def engine(world: ServiceWorld, clock: FakeClock, tmp_path: Path) -> WorkflowEngine:
    for name in SERVICE_NAMES:
        CircuitBreaker(name, default_breaker_config(), clock=clock)
    return WorkflowEngine(
        world,
        manager=StateCheckpointManager(tmp_path),
        progress=RunRecorder(),
        clock=clock,
    )


def _generator(engine: WorkflowEngine, clock: FakeClock, **config: object) -> LoadGenerator:
    return LoadGenerator(engine, LoadConfig(**config), clock=clock, seed=4)  # type: ignore[arg-type]


def test_workflows_start_at_the_configured_rate(engine: WorkflowEngine, clock: FakeClock) -> None:
    generator = _generator(engine, clock, rate=2.0, first_burst_s=100.0)
    start = clock()
    assert len(generator.plan(start)) == 1  # one due at once
    assert len(generator.plan(start + 0.4)) == 0
    assert len(generator.plan(start + 2.0)) == 4  # 0.5, 1.0, 1.5, 2.0


def test_a_burst_from_one_tenant_is_partly_rejected_by_the_execution_limit(
    engine: WorkflowEngine, clock: FakeClock, settings: object
) -> None:
    settings.WORKFLOW_EXECUTE_RATE = "10/60"  # type: ignore[attr-defined]
    generator = _generator(engine, clock, rate=0.001, burst_size=12, first_burst_s=0.0)
    clock.advance(0.01)
    planned = generator.plan(clock())
    burst_tenants = {tenant for _, tenant in planned[1:]}
    assert len(planned) == 13 and len(burst_tenants) == 1
    generator2 = _generator(engine, clock, rate=0.001, burst_size=12, first_burst_s=0.0)
    submitted = generator2.tick(clock() + 0.01)
    assert generator2.stats["rejected"] >= 2
    assert submitted == 13 - generator2.stats["rejected"]
    assert gate.limiter().rejected == generator2.stats["rejected"]
    assert WorkflowRun.objects.filter(status=RunStatus.SUCCEEDED).count() == submitted


def test_a_failed_workflow_is_executed_again_later_and_resumes(
    engine: WorkflowEngine, world: ServiceWorld, clock: FakeClock
) -> None:
    generator = _generator(engine, clock, rate=0.001, first_burst_s=1000.0, retry_after_s=8.0)
    world.set_pattern("payments", Pattern(mode="down", latency_ms=1.0))
    assert generator.tick() == 1
    failed = WorkflowRun.objects.get()
    assert failed.status == RunStatus.FAILED
    world.restore("payments")
    assert generator.tick(clock() + 1.0) == 0  # not yet
    assert generator.tick(clock() + 9.0) == 1
    resumed = WorkflowRun.objects.exclude(pk=failed.pk).get()
    assert (resumed.workflow_id, resumed.status, resumed.start_step) == (
        failed.workflow_id,
        RunStatus.SUCCEEDED,
        failed.step,
    )
    assert resumed.resumed_from == failed.last_checkpoint_id
    assert generator.snapshot()["resumed"] == 1


def test_beyond_max_pending_starts_are_skipped(engine: WorkflowEngine, clock: FakeClock) -> None:
    generator = _generator(engine, clock, rate=0.001, first_burst_s=1000.0, max_pending=1)
    generator.pending = 1  # a worker is busy
    assert generator.tick() == 0
    assert generator.stats["skipped"] == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [({"rate": 0}, "rate must be > 0"), ({"workers": 0}, "workers must be >= 1")],
)
def test_invalid_load_is_refused(config: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        LoadConfig(**config)  # type: ignore[arg-type]


def test_the_demo_command_refuses_bad_options() -> None:
    with pytest.raises(CommandError, match="--rate must be > 0"):
        call_command("demo", rate=0)
    with pytest.raises(CommandError, match="--no-demo only makes sense with --serve"):
        call_command("demo", no_demo=True)


def test_the_demo_load_comes_from_the_argument_the_setting_or_the_default(
    settings: object,
) -> None:
    from dashboard import demo

    settings.WORKFLOW_DEMO_RATE = None  # type: ignore[attr-defined]
    assert demo.config().rate == LoadConfig().rate
    settings.WORKFLOW_DEMO_RATE = 2  # type: ignore[attr-defined]
    assert demo.config().rate == 2.0
    assert demo.config(5.0).rate == 5.0
    settings.WORKFLOW_DEMO_RATE = -1  # type: ignore[attr-defined]
    with pytest.raises(ConfigValueError, match="rate must be > 0"):
        demo.config()


def test_a_stopped_generator_starts_nothing_more(engine: WorkflowEngine, clock: FakeClock) -> None:
    generator = _generator(engine, clock, rate=0.001, first_burst_s=1000.0)
    generator.start()
    with pytest.raises(RuntimeError, match="already started"):
        generator.start()
    generator.stop()  # waits for a workflow the thread may have started
    assert not generator.snapshot()["running"]
    assert generator.tick(clock() + 5000) == 0
    assert generator.pending == 0
    assert WorkflowRun.objects.exclude(status=RunStatus.SUCCEEDED).count() == 0
