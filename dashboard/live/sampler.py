"""1 Hz snapshots for the live pages: metrics, limiter rates, breaker counters.

Every tick reads the telemetry metrics and every breaker and limiter once, keeps the
last ``keep`` samples (so a page opened now still charts the last minutes), and sends
each page's fragment to its group only while someone in this process watches it.
Breakers whose counters moved without a transition (failure count, calls) are handed
to the broadcaster, which pushes them like a transition; reading a breaker's snapshot
also performs its lazy OPEN → HALF_OPEN step, so that transition shows within a tick.

Cluster mode: each process samples its own metrics, limiters and call counters, tags
every sample with ``process`` (``host-pid``), and sends it only to the pages connected
to that process (the live groups are per process, see :mod:`.broadcast`): a chart never
mixes two processes' series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from dashboard import runtime, selectors
from dashboard.fleet import primitives as fleet_primitives
from resilience import telemetry
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry

from . import fragments
from .broadcast import Broadcaster, group
from .fanout import local_groups

logger = logging.getLogger(__name__)


def add_fleet(sample: dict[str, Any], totals: dict[str, int]) -> None:
    """Chart the fleet's summed counters (``fleet.*``) beside this process's own."""
    for key in ("calls", "failures", "breaker_rejected", "limiter_allowed", "limiter_rejected"):
        sample["counters"][f"fleet.{key}"] = totals[key]
        sample["key"][f"fleet_{key}"] = totals[key]
    sample["gauges"]["fleet.instances"] = totals["instances"]


def _breaker_signature(snap: dict[str, Any]) -> tuple[Any, ...]:
    calls = snap["calls"]
    last = snap["last_failure"]
    return (
        snap["state"],
        snap["failure_count"],
        snap["success_count"],
        snap["failure_rate"],
        snap["half_open_calls_in_flight"],
        calls["successful"],
        calls["failed"],
        calls["rejected"],
        None if last is None else last.get("time"),
    )


class Sampler:
    """Takes a sample every ``interval`` seconds and sends it to the watched pages."""

    def __init__(
        self,
        broadcaster: Broadcaster,
        *,
        interval: float = 1.0,
        keep: int = 300,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.broadcaster = broadcaster
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self.watchers: Counter[str] = Counter()
        self._clock = clock
        self._sleep = sleep
        self._breakers: dict[str, tuple[Any, ...]] = {}
        self._limiters: dict[str, tuple[float, int, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.errors = 0
        # Fleet totals (worker processes, from the database), refreshed by tick() only
        # while a page that charts them is watched; sample() adds them when present.
        self.fleet: dict[str, int] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self.running:
            return
        self._loop = loop
        self._task = loop.create_task(self._run(), name="live-sampler")

    async def stop(self) -> None:
        task, self._task, self._loop = self._task, None, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self) -> None:
        self.samples.clear()
        self.watchers.clear()
        self._breakers.clear()
        self._limiters.clear()
        self.ticks = self.errors = 0

    async def _run(self) -> None:
        start = self._clock()
        while True:
            try:
                await self.tick()
            except Exception:
                self.errors += 1
                logger.exception("live sampler tick failed")
            elapsed = self._clock() - start
            await self._sleep(self.interval - elapsed % self.interval)

    # -- one tick ---------------------------------------------------------------------

    def sample(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """Read everything once: (sample, breaker snapshots, limiter rows with rates)."""
        now = self._clock()
        breakers = [b.snapshot() for b in circuit_breaker_registry.all()]
        limiters = self._limiter_rows(now, [lim.snapshot() for lim in rate_limiter_registry.all()])
        metrics = telemetry.metrics.snapshot()
        sample = {
            "t": round(now, 3),
            "process": runtime.identity().live_process,
            "counters": dict(metrics["counters"]),
            "gauges": dict(metrics["gauges"]),
            "histograms": {
                key: {q: h[q] for q in ("p50", "p95", "p99", "count")}
                for key, h in metrics["histograms"].items()
            },
            "key": {
                "calls": sum(b["calls"]["successful"] + b["calls"]["failed"] for b in breakers),
                "failures": sum(b["calls"]["failed"] for b in breakers),
                "breaker_rejected": sum(b["calls"]["rejected"] for b in breakers),
                "limiter_allowed": sum(lim["allowed"] for lim in limiters),
                "limiter_rejected": sum(lim["rejected"] for lim in limiters),
            },
        }
        if self.fleet is not None:
            add_fleet(sample, self.fleet)
        self.samples.append(sample)
        return sample, breakers, limiters

    def _limiter_rows(self, now: float, snaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        seen: dict[str, tuple[float, int, int]] = {}
        for snap in snaps:
            name = snap["name"]
            before = self._limiters.get(name)
            allowed_rate = rejected_rate = None
            if before is not None and now > before[0]:
                dt = now - before[0]
                allowed_rate = max(snap["allowed"] - before[1], 0) / dt
                rejected_rate = max(snap["rejected"] - before[2], 0) / dt
            seen[name] = (now, snap["allowed"], snap["rejected"])
            rows.append({**snap, "allowed_rate": allowed_rate, "rejected_rate": rejected_rate})
        self._limiters = seen
        return rows

    def changed_breakers(self, breakers: list[dict[str, Any]]) -> list[str]:
        """Names whose counters or state differ from the previous tick."""
        changed = []
        seen = {}
        for snap in breakers:
            signature = _breaker_signature(snap)
            seen[snap["name"]] = signature
            if self._breakers.get(snap["name"], signature) != signature:
                changed.append(snap["name"])
        self._breakers = seen
        return changed

    async def tick(self) -> None:
        if self.watchers["metrics"] or self.watchers["overview"]:
            try:
                self.fleet = dict(await database_sync_to_async(fleet_primitives.totals)())
            except Exception:
                self.fleet = None
                logger.exception("live sampler: reading the fleet totals failed")
        else:
            self.fleet = None  # nobody charts them: no query, and no stale values kept
        sample, breakers, limiters = self.sample()
        self.ticks += 1
        for name in self.changed_breakers(breakers):
            self.broadcaster.mark(name)
        # Rendered once per page; the same message goes to each of its sockets.
        if self.watchers["metrics"]:
            await local_groups.group_send(
                group("metrics"), {"type": "live.fragment", "html": fragments.sample(sample)}
            )
        if self.watchers["limiters"]:
            await local_groups.group_send(
                group("limiters"),
                {"type": "live.fragment", "html": fragments.limiter_rows(limiters)},
            )
        if self.watchers["overview"]:
            html = fragments.overview_summary(
                health=selectors.health(breakers),
                counts=selectors.state_counts(breakers),
                busiest=selectors.busiest_limiters(limiters),
                limiter_count=len(limiters),
            ) + fragments.sample(sample)
            await local_groups.group_send(
                group("overview"), {"type": "live.fragment", "html": html}
            )

    def stats(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "errors": self.errors,
            "running": self.running,
            "watchers": dict(self.watchers),
            "samples": len(self.samples),
        }
