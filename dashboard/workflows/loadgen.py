"""A load generator: workflows executed continuously at a configurable rate.

Simulated tenants start workflows through the same per-caller execution limit as the
API (``workflows.execute``); now and then one tenant sends a burst, so the limiter
rejects some. Failed workflows (a service they need was down) are executed again a
little later and resume from their checkpoint. Executions run on a few daemon worker
threads of the process that runs it (a ``run_agents`` worker in ``make run``, or the
server with ``RESILIENCE_DEMO``), because breakers and fake services live in its memory.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections

from resilience import telemetry
from resilience._validate import non_negative, positive, positive_int

from . import gate
from .engine import WorkflowBusy, WorkflowEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """How much load to generate.

    Args:
        rate: workflow executions started per second.
        workers: executions running at once.
        max_pending: executions waiting for or held by a worker at most; more are skipped.
        tenants: simulated callers, each with its own execution budget.
        burst_size: executions one tenant requests at once in a burst.
        first_burst_s / burst_every_s: when bursts happen (seconds after start).
        retry_after_s: a failed workflow is executed again (resumed) this much later.

    Raises:
        ConfigValueError / ConfigTypeError: a value is out of range or of the wrong type.
    """

    rate: float = 0.8
    workers: int = 2
    max_pending: int = 12
    tenants: int = 8
    burst_size: int = 12
    first_burst_s: float = 3.0
    burst_every_s: float = 30.0
    retry_after_s: float = 8.0

    def __post_init__(self) -> None:
        for name in ("rate", "burst_every_s"):
            object.__setattr__(self, name, positive(name, getattr(self, name)))
        for name in ("first_burst_s", "retry_after_s"):
            object.__setattr__(self, name, non_negative(name, getattr(self, name)))
        for name in ("workers", "max_pending", "tenants", "burst_size"):
            positive_int(name, getattr(self, name))


class LoadGenerator:
    """Starts workflows on ``engine`` following ``config``; :meth:`tick` does one round.

    Without :meth:`start`, :meth:`tick` runs the due executions itself (tests).

    Args:
        engine: the workflow engine.
        config: the load.
        clock: monotonic seconds.
        seed: for the tenants' choices.
    """

    def __init__(
        self,
        engine: WorkflowEngine,
        config: LoadConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or LoadConfig()
        self.clock = clock
        self._rng = random.Random(seed)
        self._prefix = f"wf-{secrets.token_hex(2)}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._started = clock()
        self._next_start = self._started
        self._next_burst = self._started + self.config.first_burst_s
        self._retries: list[tuple[float, str, str]] = []
        self._count = 0
        self.stats = {"started": 0, "rejected": 0, "skipped": 0, "finished": 0, "resumed": 0}
        self.pending = 0

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count:05d}"

    def plan(self, now: float) -> list[tuple[str, str]]:
        """(workflow id, tenant) pairs due at ``now``: steady starts, bursts and retries."""
        due: list[tuple[str, str]] = []
        config = self.config
        while self._next_start <= now:
            self._next_start += 1.0 / config.rate
            due.append((self._new_id(), f"tenant-{self._rng.randrange(config.tenants)}"))
        if self._next_burst <= now:
            self._next_burst += config.burst_every_s
            tenant = f"tenant-{self._rng.randrange(config.tenants)}"
            due.extend((self._new_id(), tenant) for _ in range(config.burst_size))
        with self._lock:
            ready = [item for item in self._retries if item[0] <= now]
            self._retries = [item for item in self._retries if item[0] > now]
        due.extend((workflow_id, tenant) for _, workflow_id, tenant in ready)
        return due

    def tick(self, now: float | None = None) -> int:
        """Submit what is due now; returns how many executions were submitted."""
        submitted = 0
        for workflow_id, tenant in self.plan(self.clock() if now is None else now):
            if self._stop.is_set():
                break
            with self._lock:
                if self.pending >= self.config.max_pending:
                    self.stats["skipped"] += 1
                    continue
                self.pending += 1
            if gate.admit(tenant) is not None:
                with self._lock:
                    self.pending -= 1
                    self.stats["rejected"] += 1
                telemetry.metrics.increment_counter("loadgen.rejected")
                continue
            self.stats["started"] += 1
            self._submit(workflow_id, tenant)
            submitted += 1
        return submitted

    def _submit(self, workflow_id: str, tenant: str) -> None:
        if self._workers:
            self._queue.put((workflow_id, tenant))
        else:
            self.run_one(workflow_id, tenant)

    def run_one(self, workflow_id: str, tenant: str) -> None:
        """Execute one workflow (in a worker); a failed one is scheduled to be resumed."""
        try:
            run = self.engine.execute(workflow_id, caller=f"loadgen:{tenant}")
            if run.resumed_from:
                self.stats["resumed"] += 1
            if run.status == "failed":
                with self._lock:
                    self._retries.append(
                        (self.clock() + self.config.retry_after_s, workflow_id, tenant)
                    )
        except WorkflowBusy:
            pass
        except Exception:
            logger.exception("workflow %s failed unexpectedly", workflow_id)
        finally:
            with self._lock:
                self.pending -= 1
                self.stats["finished"] += 1
            close_old_connections()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.stats,
                "pending": self.pending,
                "running": self._thread is not None and self._thread.is_alive(),
                "retries_waiting": len(self._retries),
                "rate": self.config.rate,
                "workers": self.config.workers,
            }

    def start(self) -> None:
        """Run in daemon threads until :meth:`stop`, or until the process exits: a
        workflow cut short then resumes from its checkpoint when executed again."""
        if self._thread is not None:
            raise RuntimeError("the load generator is already started")
        self._workers = [
            threading.Thread(target=self._work, name=f"workflow-{n}", daemon=True)
            for n in range(self.config.workers)
        ]
        for worker in self._workers:
            worker.start()
        self._thread = threading.Thread(target=self._loop, name="workflow-loadgen", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("load generator tick failed")
            self._stop.wait(0.1)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self.run_one(*item)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop starting workflows, drop queued ones, wait up to ``timeout`` s for running ones."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                with self._lock:
                    self.pending -= 1
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.0))


_lock = threading.Lock()
_generator: LoadGenerator | None = None


def current() -> LoadGenerator | None:
    """The running load generator of this process, if any."""
    return _generator


def start(engine: WorkflowEngine, config: LoadConfig | None = None) -> LoadGenerator | None:
    """Start the process's load generator once; None if one already runs."""
    global _generator
    with _lock:
        if _generator is not None:
            return None
        _generator = LoadGenerator(engine, config)
        _generator.start()
        return _generator


def stop(timeout: float = 5.0) -> None:
    """Stop the process's load generator (no-op if none runs); ``start`` may run a new one."""
    global _generator
    with _lock:
        generator, _generator = _generator, None
    if generator is not None:
        generator.stop(timeout)
