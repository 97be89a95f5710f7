"""The multi-agent workflow: planner, researcher, tool caller and writer.

Every execution is one trace: a ``workflow.execute`` span, a span per agent step and a
CLIENT span per external call. Each external call goes through the circuit breaker of
its service. State is checkpointed every ``checkpoint_interval`` steps (and when the
run ends or fails), and an execution resumes from the workflow's latest checkpoint
unless that checkpoint is of a completed run.

Degradation: the search API and the LLM have fallbacks (the step completes with a
placeholder and the run ends ``degraded``); the payment service has none, so while it
is unavailable the run stops cleanly as ``failed``, with a checkpoint at the failed
step from which the next execution resumes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from opentelemetry.trace import SpanKind

from resilience import telemetry
from resilience._validate import positive_int
from resilience.checkpoint import AutoCheckpointer, StateCheckpointManager, checkpoint_manager
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker_registry,
)
from resilience.errors import CheckpointError, CircuitOpenError

from .definition import (
    AGENT_ID,
    STATE_VERSION,
    STEPS,
    NoProgress,
    Progress,
    Run,
    Step,
    local_work,
    new_state,
    validate_workflow_id,
)
from .simulated import ServiceError, ServiceWorld


def default_breaker_config() -> CircuitBreakerConfig:
    # Opens fast and probes after 5 s, so an 8 s outage shows open -> half-open ->
    # closed within seconds; a call of 1 s or more counts as a failure too.
    return CircuitBreakerConfig(
        failure_threshold=3,
        success_threshold=2,
        timeout=5.0,
        half_open_max_calls=1,
        slow_call_duration=1.0,
        failure_exceptions=(ServiceError,),
    )


class WorkflowBusy(Exception):
    """The workflow is already executing in this process."""


class NotResumable(ValueError):
    """The chosen checkpoint cannot be run from (another workflow's, or an unusable state)."""


class StepFailed(Exception):
    """A critical step could not complete; the run stops (and can be resumed)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WorkflowEngine:
    """Executes workflows against ``world``'s fake services.

    Args:
        world: the fake services.
        manager: checkpoint manager (default: the process default).
        progress: told about each run's start, steps and end (e.g. to store it).
        checkpoint_interval: save every N completed steps (also at the end or failure).
        breaker_config: config of breakers created here (one per service, named after it).
        clock: monotonic seconds, for durations.
    """

    def __init__(
        self,
        world: ServiceWorld,
        *,
        manager: StateCheckpointManager = checkpoint_manager,
        progress: Progress | None = None,
        checkpoint_interval: int = 3,
        breaker_config: CircuitBreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.world = world
        self.manager = manager
        self.progress: Progress = progress or NoProgress()
        self.checkpoint_interval = positive_int("checkpoint_interval", checkpoint_interval)
        self.breaker_config = breaker_config or default_breaker_config()
        self.clock = clock
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def breaker(self, service: str) -> CircuitBreaker:
        """The breaker guarding ``service`` (created on first use)."""
        return circuit_breaker_registry.get_or_create(service, self.breaker_config)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    @contextlib.contextmanager
    def _claim(self, workflow_id: str) -> Iterator[None]:
        with self._lock:
            if workflow_id in self._running:
                raise WorkflowBusy(f"workflow {workflow_id!r} is already running")
            self._running.add(workflow_id)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(workflow_id)

    def load_state(self, workflow_id: str) -> tuple[dict[str, Any], str | None]:
        """(state to run from, checkpoint it came from or None for a fresh start)."""
        checkpoint_id = self.manager.get_latest_checkpoint(
            agent_id=AGENT_ID, workflow_id=workflow_id
        )
        if checkpoint_id is None:
            return new_state(workflow_id), None
        try:
            state = self.manager.load_checkpoint(checkpoint_id)
        except CheckpointError:
            telemetry.metrics.increment_counter("workflow.checkpoints.unusable")
            return new_state(workflow_id), None
        if (
            not isinstance(state, dict)
            or state.get("version") != STATE_VERSION
            or state.get("status") == "completed"
            or not isinstance(state.get("next_step"), int)
        ):
            return new_state(workflow_id), None
        return state, checkpoint_id

    def chosen_state(self, workflow_id: str, checkpoint_id: str) -> dict[str, Any]:
        """The state of ``checkpoint_id`` to re-run ``workflow_id`` from (verified first).

        Raises:
            ConfigValueError: a malformed id.
            CheckpointNotFoundError: no such checkpoint.
            CheckpointCorruptedError: it failed verification.
            NotResumable: it is another workflow's, or its state cannot be run from.
        """
        info = self.manager.get_checkpoint_info(checkpoint_id)
        if info["workflow_id"] != workflow_id or info["agent_id"] != AGENT_ID:
            raise NotResumable(
                f"checkpoint {checkpoint_id} belongs to workflow {info['workflow_id']!r} "
                f"(agent {info['agent_id']!r}), not to {workflow_id!r} ({AGENT_ID!r})"
            )
        state = self.manager.load_checkpoint(checkpoint_id)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise NotResumable(
                f"checkpoint {checkpoint_id} is not a version {STATE_VERSION} workflow state"
            )
        next_step = state.get("next_step")
        if (
            not isinstance(next_step, int)
            or isinstance(next_step, bool)
            or not (0 <= next_step <= len(STEPS))
        ):
            raise NotResumable(
                f"checkpoint {checkpoint_id}: next_step must be an integer from 0 to "
                f"{len(STEPS)}, got {next_step!r}"
            )
        if next_step == len(STEPS):
            raise NotResumable(
                f"checkpoint {checkpoint_id} is the end of a completed run (step "
                f"{next_step} of {len(STEPS)}): nothing is left to run; fork it with an "
                "earlier next_step to re-run steps"
            )
        for name, kind in (("results", dict), ("degraded", list)):
            if not isinstance(state.get(name), kind):
                raise NotResumable(
                    f"checkpoint {checkpoint_id}: {name} must be a JSON "
                    f"{'object' if kind is dict else 'array'}"
                )
        return state

    def execute(
        self, workflow_id: str, *, caller: str = "api", from_checkpoint: str | None = None
    ) -> Run:
        """Run ``workflow_id`` to its end (or a clean failure), resuming if it can.

        Args:
            from_checkpoint: re-run from this checkpoint of the workflow instead of the
                latest one (its state is verified and checked before anything runs).

        Returns:
            The finished :class:`Run`: ``status`` is ``succeeded``, ``degraded`` (some
            steps used a fallback) or ``failed`` (``error`` and ``retry_after`` say why).

        Raises:
            ConfigValueError: an invalid ``workflow_id``.
            WorkflowBusy: the workflow is already executing in this process.
            CheckpointError / NotResumable: ``from_checkpoint`` cannot be run from
                (see :meth:`chosen_state`).
        """
        validate_workflow_id(workflow_id)
        with self._claim(workflow_id):
            chosen = None
            if from_checkpoint is not None:
                chosen = (self.chosen_state(workflow_id, from_checkpoint), from_checkpoint)
            return self._execute(workflow_id, caller, chosen)

    def _execute(
        self, workflow_id: str, caller: str, chosen: tuple[dict[str, Any], str] | None = None
    ) -> Run:
        started = self.clock()
        attributes = {"workflow.id": workflow_id, "workflow.caller": caller}
        with telemetry.tracer.span("workflow.execute", attributes=attributes) as root:
            state, resumed_from = chosen or self.load_state(workflow_id)
            state["workflow_id"] = workflow_id  # a fork runs under its own id
            state["executions"] = int(state.get("executions", 0)) + 1
            state["status"] = "running"
            first = state["next_step"]
            run = Run(
                workflow_id=workflow_id,
                caller=caller,
                total_steps=len(STEPS),
                start_step=first,
                resumed_from=resumed_from,
                step=first,
                trace_id=root.trace_id,
                last_checkpoint_id=resumed_from,
                degraded_steps=list(state["degraded"]),
            )
            root.set_attributes(
                {"workflow.start_step": first, "workflow.resumed": bool(resumed_from)}
            )
            if resumed_from:
                root.set_attribute("workflow.resumed_from", resumed_from)
                telemetry.metrics.increment_counter("workflow.resumed")
            self.progress.started(run)
            auto = AutoCheckpointer(
                self.manager, AGENT_ID, workflow_id, self.checkpoint_interval, clock=self.clock
            )
            telemetry.metrics.set_gauge("workflow.active", len(self._running))
            try:
                self._steps(state, run, auto)
            except StepFailed as exc:
                state["status"] = "failed"
                run.status, run.error, run.retry_after = "failed", str(exc), exc.retry_after
                root.set_status("ERROR", str(exc))
            except BaseException as exc:
                run.status, run.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
                self._finish(run, state, auto, started, save=False)
                raise
            else:
                state["status"] = "completed"
                run.status = "degraded" if state["degraded"] else "succeeded"
            root.set_attribute("workflow.status", run.status)
            self._finish(run, state, auto, started, save=True)
        return run

    def _finish(
        self, run: Run, state: dict[str, Any], auto: AutoCheckpointer, started: float, save: bool
    ) -> None:
        run.degraded_steps = list(state["degraded"])
        run.duration_ms = round((self.clock() - started) * 1000, 1)
        try:
            if save:
                run.last_checkpoint_id = auto.force_checkpoint(state, self._meta(run))
        finally:
            telemetry.metrics.increment_counter("workflow.runs", labels={"status": run.status})
            telemetry.metrics.record_histogram("workflow.duration_ms", run.duration_ms)
            self.progress.finished(run)

    @staticmethod
    def _meta(run: Run) -> dict[str, Any]:
        # run_id and trace_id let the checkpoint timeline say which run wrote each one.
        meta: dict[str, Any] = {"step": run.step, "agent": run.agent, "status": run.status}
        if run.run_id is not None:
            meta["run_id"] = run.run_id
        if run.trace_id:
            meta["trace_id"] = run.trace_id
        return meta

    def _steps(self, state: dict[str, Any], run: Run, auto: AutoCheckpointer) -> None:
        last = len(STEPS) - 1
        for index in range(state["next_step"], len(STEPS)):
            step = STEPS[index]
            run.agent = step.agent
            self._step(index, step, state)
            state["next_step"] = run.step = index + 1
            run.degraded_steps = list(state["degraded"])
            telemetry.metrics.increment_counter(
                "workflow.steps.completed", labels={"agent": step.agent}
            )
            # After the last step, _finish saves the end of the run (with its outcome)
            # at once: a scheduled save here would be the same state a moment earlier.
            if index < last:
                checkpoint_id = auto.maybe_checkpoint(state, self._meta(run))
                if checkpoint_id is not None:
                    run.last_checkpoint_id = checkpoint_id
            self.progress.step_done(run)

    def _step(self, index: int, step: Step, state: dict[str, Any]) -> None:
        attributes = {
            "workflow.id": state["workflow_id"],
            "agent": step.agent,
            "step.name": step.name,
            "step.index": index,
        }
        with telemetry.tracer.span(f"{step.agent}.{step.name}", attributes=attributes) as span:
            if step.service is None:
                result = local_work(step, state)
            else:
                try:
                    result = self._call(step.service, step.operation)
                except (ServiceError, CircuitOpenError) as exc:
                    retry_after = exc.remaining if isinstance(exc, CircuitOpenError) else None
                    if step.critical:
                        raise StepFailed(
                            f"{step.agent}.{step.name}: {step.service} unavailable ({exc})",
                            retry_after,
                        ) from exc
                    result = {"fallback": True, "reason": str(exc)}
                    if step.name not in state["degraded"]:
                        state["degraded"].append(step.name)
                    span.set_attribute("workflow.fallback", True)
                    span.add_event("fallback", {"reason": str(exc)})
                    telemetry.metrics.increment_counter(
                        "workflow.fallbacks", labels={"service": step.service}
                    )
            state["results"][step.name] = result

    def _call(self, service: str, operation: str) -> dict[str, Any]:
        breaker = self.breaker(service)
        attributes = {"peer.service": service, "rpc.method": operation, "breaker": breaker.name}
        started = self.clock()
        kind: str | None = "failed"
        try:
            with telemetry.tracer.span(
                f"{service} {operation}", attributes=attributes, kind=SpanKind.CLIENT
            ):
                result = breaker.call(self.world.call, service, operation)
            kind = "successful"
            return result
        except CircuitOpenError:
            kind = None  # rejected: the call did not run
            raise
        finally:
            elapsed = self.clock() - started
            telemetry.metrics.record_histogram(
                "workflow.external_call_ms", elapsed * 1000, labels={"service": service}
            )
            collector = telemetry.metrics.collector
            if kind is not None and collector is not None:
                collector.observe_call(breaker.name, kind, elapsed)


def configured_interval() -> int:
    """The WORKFLOW_CHECKPOINT_INTERVAL setting, default 3."""
    return int(getattr(settings, "WORKFLOW_CHECKPOINT_INTERVAL", 3))


_lock = threading.Lock()
_engine: WorkflowEngine | None = None


def engine() -> WorkflowEngine:
    """The process's engine: the configured fake services, runs stored as WorkflowRun rows."""
    global _engine
    with _lock:
        if _engine is None:
            from . import progress, simulated

            _engine = WorkflowEngine(
                simulated.world(),
                progress=progress.RunRecorder(),
                checkpoint_interval=configured_interval(),
            )
        return _engine


def install(new: WorkflowEngine | None) -> WorkflowEngine | None:
    """Replace the process's engine (tests); None rebuilds it on next use."""
    global _engine
    with _lock:
        previous, _engine = _engine, new
    return previous


def running_workflow_ids() -> set[str]:
    """Workflows this process's engine runs now (none if no engine was built)."""
    current = _engine
    return set(current.running()) if current is not None else set()
