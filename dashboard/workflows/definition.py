"""What a workflow is: its agents' steps, its checkpointed state and a run's progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from resilience.checkpoint import NAME_PATTERN
from resilience.errors import ConfigValueError

AGENT_ID = "orchestrator"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an agent; ``service`` is the external service it calls, if any."""

    agent: str
    name: str
    service: str | None = None
    operation: str = ""
    critical: bool = False  # no fallback: the run fails while the service is unavailable


STEPS: tuple[Step, ...] = (
    Step("planner", "understand_request", "llm", "complete"),
    Step("planner", "make_plan"),
    Step("researcher", "search_sources", "search-api", "search"),
    Step("researcher", "search_details", "search-api", "search"),
    Step("researcher", "summarise_findings", "llm", "complete"),
    Step("tool_caller", "check_budget"),
    Step("tool_caller", "authorise_payment", "payments", "authorise", critical=True),
    Step("tool_caller", "lookup_reference", "search-api", "lookup"),
    Step("writer", "outline"),
    Step("writer", "draft", "llm", "complete"),
    Step("writer", "review", "llm", "complete"),
    Step("writer", "publish"),
)
AGENTS = ("planner", "researcher", "tool_caller", "writer")


@dataclass(slots=True)
class Run:
    """Progress of one execution, reported to the :class:`Progress` listener."""

    workflow_id: str
    caller: str
    total_steps: int
    start_step: int
    resumed_from: str | None
    step: int
    status: str = "running"
    agent: str = ""
    trace_id: str = ""
    last_checkpoint_id: str | None = None
    degraded_steps: list[str] = field(default_factory=list)
    error: str = ""
    retry_after: float | None = None
    duration_ms: float = 0.0
    run_id: int | None = None  # set by a Progress that stores runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "status": self.status,
            "step": self.step,
            "total_steps": self.total_steps,
            "agent": self.agent,
            "start_step": self.start_step,
            "resumed_from": self.resumed_from,
            "trace_id": self.trace_id,
            "checkpoint_id": self.last_checkpoint_id,
            "degraded_steps": list(self.degraded_steps),
            "error": self.error,
            "retry_after": self.retry_after,
            "duration_ms": self.duration_ms,
        }


class Progress(Protocol):
    def started(self, run: Run) -> None: ...
    def step_done(self, run: Run) -> None: ...
    def finished(self, run: Run) -> None: ...


class NoProgress:
    def started(self, run: Run) -> None:
        pass

    def step_done(self, run: Run) -> None:
        pass

    def finished(self, run: Run) -> None:
        pass


def validate_workflow_id(workflow_id: object) -> str:
    """The id if it is 1-128 of ``A-Z a-z 0-9 _ . : @ -`` starting alphanumeric."""
    if not isinstance(workflow_id, str) or not NAME_PATTERN.fullmatch(workflow_id):
        raise ConfigValueError(
            "workflow_id must be 1-128 letters, digits or _ . : @ - starting with a letter "
            f"or digit, got {workflow_id!r}"
        )
    return workflow_id


def new_state(workflow_id: str) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "workflow_id": workflow_id,
        "status": "running",
        "next_step": 0,
        "results": {},
        "degraded": [],
        "executions": 0,
    }


def local_work(step: Step, state: dict[str, Any]) -> dict[str, Any]:
    # Stand-ins for the agents' own reasoning: small, deterministic results.
    results = state["results"]
    if step.name == "make_plan":
        return {"tasks": ["research", "pay for data", "write"], "budget": 25}
    if step.name == "check_budget":
        return {"approved": True, "amount": results.get("make_plan", {}).get("budget", 25)}
    if step.name == "outline":
        return {"sections": ["summary", "findings", "sources"]}
    fallbacks = len(state["degraded"])
    return {"published": True, "words": 600 - 50 * fallbacks, "fallbacks": fallbacks}
