"""What each kind of rule watches (parameters are checked in :mod:`.params`).

Every source reads cheap, already-kept state (breaker and limiter snapshots, the
telemetry snapshot, span rows, processor counters) on the evaluator's thread; none of
them adds work to the hot path. The one bus listener only counts breaker openings, so
a breaker that opens and closes again between two evaluations is still seen.

``evaluate`` returns one :class:`Observation` per subject (a breaker, a limiter, a
metric series...). A rule that cannot be evaluated raises :class:`RuleError` (or
``ValueError`` from parameter parsing): the engine shows it on the rule.
"""

from __future__ import annotations

import fnmatch
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from dashboard.selectors import BLOCKING_STATES
from resilience import telemetry
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.events import BreakerStateChanged, CheckpointCorrupted, Event
from resilience.rate_limiter import rate_limiter_registry

from .models import RuleKind
from .params import (
    AGGREGATES,
    OPS,
    BreakerParams,
    CountParams,
    LimiterParams,
    MetricParams,
    SpanErrorParams,
    parse_parameters,
)

__all__ = [
    "Observation",
    "RuleError",
    "SampleMemory",
    "checkpoint_verification_failures",
    "evaluate",
    "on_event",
    "parse_parameters",
    "report_checkpoint_verification_failure",
]


class RuleError(ValueError):
    """The rule cannot be evaluated as written (unknown metric, bad parameter...)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The condition of one rule for one subject at one evaluation."""

    subject: str
    value: float | None
    active: bool
    message: str


# ---- counters kept here -----------------------------------------------------------------

_lock = threading.Lock()
_open_counts: dict[str, int] = {}
_checkpoint_failures = 0
_OPEN_STATES = BLOCKING_STATES


def on_event(event: Event) -> None:
    """Bus listener (subscribed by ``dashboard.runtime``)."""
    # Runs on the publishing thread for every event: one type test, then return.
    if type(event) is BreakerStateChanged and event.to_state in _OPEN_STATES:
        with _lock:
            _open_counts[event.name] = _open_counts.get(event.name, 0) + 1
    elif type(event) is CheckpointCorrupted:
        report_checkpoint_verification_failure()


def report_checkpoint_verification_failure() -> None:
    """Count one checkpoint that failed verification (the manager's CheckpointCorrupted
    events arrive here; other code that verifies blobs itself may call it too). Only the
    count alerts; which checkpoint and why are in the event and the checkpoint's log."""
    global _checkpoint_failures
    with _lock:
        _checkpoint_failures += 1


def checkpoint_verification_failures() -> int:
    """Checkpoint verification failures reported in this process so far."""
    return _checkpoint_failures


def _open_count(name: str) -> int:
    return _open_counts.get(name, 0)


# ---- memory of earlier samples, for rates and increases ---------------------------------


class SampleMemory:
    """Recent samples of monotonic counters, to turn totals into increases over a window."""

    def __init__(self) -> None:
        self._samples: dict[tuple[Any, ...], deque[tuple[float, float]]] = {}
        self._marks: dict[tuple[Any, ...], Any] = {}

    def increase(
        self, key: tuple[Any, ...], value: float, now: float, window: float
    ) -> tuple[float, float] | None:
        """Record ``value`` at ``now``; return (increase, seconds covered) over ``window``.

        None on the first sample. A counter that went down (its owner was re-created)
        starts over.
        """
        samples = self._samples.setdefault(key, deque())
        if samples and value < samples[-1][1]:
            samples.clear()
        samples.append((now, value))
        # Keep the newest sample at or before the window's start as the baseline.
        while len(samples) > 1 and samples[1][0] <= now - window:
            samples.popleft()
        if len(samples) < 2:
            return None
        start, base = samples[0]
        return value - base, now - start

    def mark(self, key: tuple[Any, ...], value: Any) -> Any:
        """Remember ``value`` under ``key``; return what was remembered before (or None)."""
        previous = self._marks.get(key)
        self._marks[key] = value
        return previous

    def prune(self, now: float, max_age: float = 3600.0) -> None:
        """Forget series not sampled for ``max_age`` seconds (deleted limiters, rules)."""
        for key in [k for k, s in self._samples.items() if not s or s[-1][0] < now - max_age]:
            del self._samples[key]


# ---- evaluation ----------------------------------------------------------------------------


def evaluate(
    kind: str, parameters: Mapping[str, Any], *, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    """Observe every subject of a rule.

    Args:
        kind: the rule's kind.
        parameters: the rule's parameters (parsed here).
        memory: where earlier samples are kept between evaluations.
        key: distinguishes this rule's samples in ``memory`` (the rule's id).
        now: epoch seconds (the engine's clock).

    Raises:
        RuleError / ValueError / TypeError: the rule cannot be evaluated.
    """
    params = parse_parameters(kind, parameters)
    return _EVALUATORS[kind](params, memory, key, now)


def _breakers(
    params: BreakerParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    result = []
    for breaker in circuit_breaker_registry.all():
        name = breaker.name
        if not fnmatch.fnmatchcase(name, params.breaker) or (
            params.exclude and fnmatch.fnmatchcase(name, params.exclude)
        ):
            continue
        state = breaker.state.value
        opened = _open_count(name)
        seen = memory.mark((key, "opened", name), opened)
        # An opening since the last look counts even if the breaker has closed again.
        flapped = seen is not None and opened > seen and state not in params.states
        active = state in params.states or flapped
        # How long it has been unhealthy, by this evaluator's clock.
        since = memory.mark((key, "since", name), None)
        if active:
            since = now if since is None else since
            memory.mark((key, "since", name), since)
        elapsed = now - since if active and since is not None else 0.0
        if flapped:
            message = f"breaker {name} opened and is {state} again"
        else:
            message = f"breaker {name} is {state}"
        result.append(Observation(name, round(elapsed, 3), active, message))
    return result


def _limiters(
    params: LimiterParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    result = []
    for limiter in rate_limiter_registry.all():
        name = limiter.name
        if name is None or not fnmatch.fnmatchcase(name, params.limiter):
            continue
        seen = memory.increase((key, name), float(limiter.rejected), now, params.window)
        if seen is None or seen[1] <= 0:
            result.append(Observation(name, None, False, f"limiter {name}: first sample"))
            continue
        per_minute = seen[0] / seen[1] * 60.0
        result.append(
            Observation(
                name,
                round(per_minute, 3),
                per_minute > params.threshold,
                f"limiter {name} rejects {per_minute:.1f}/min (threshold {params.threshold:g})",
            )
        )
    return result


def _metrics(params: MetricParams, memory: SampleMemory, key: Any, now: float) -> list[Observation]:
    snapshot = telemetry.metrics.snapshot()
    prefix = params.metric + "{"
    for kind in ("counter", "gauge", "histogram"):
        series = {
            name: value
            for name, value in snapshot[f"{kind}s"].items()  # type: ignore[literal-required]
            if name == params.metric
            or (not params.metric.endswith("}") and name.startswith(prefix))
        }
        if series:
            break
    else:
        raise RuleError(f"unknown metric {params.metric!r}: no counter, gauge or histogram has it")
    aggregate = params.aggregate or AGGREGATES[kind][0]
    if aggregate not in AGGREGATES[kind]:
        raise RuleError(
            f"aggregate {aggregate!r} does not apply to the {kind} {params.metric!r}, "
            f"use one of {list(AGGREGATES[kind])}"
        )
    compare = OPS[params.op]
    result = []
    for name, raw in sorted(series.items()):
        value: float | None
        if kind == "histogram" and aggregate == "mean":
            value = raw["sum"] / raw["count"] if raw.get("count") else None
        elif kind == "histogram":
            value = raw.get(aggregate)
        elif aggregate == "rate":
            seen = memory.increase((key, name), float(raw), now, params.window)
            value = None if seen is None or seen[1] <= 0 else seen[0] / seen[1]
        else:
            value = float(raw)
        if value is None:
            result.append(Observation(name, None, False, f"{name}: no {aggregate} yet"))
            continue
        active = compare(value, params.threshold)
        result.append(
            Observation(
                name,
                value,
                active,
                f"{name} {aggregate} = {value:g} ({params.op} {params.threshold:g} "
                f"{'holds' if active else 'does not hold'})",
            )
        )
    return result


def _span_errors(
    params: SpanErrorParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    from dashboard.traces.models import SpanRecord, SpanStatus

    since = datetime.fromtimestamp(now, tz=UTC) - timedelta(seconds=params.window)
    spans = SpanRecord.objects.filter(start__gte=since)
    if params.service:
        spans = spans.filter(service=params.service)
    if params.span:
        spans = spans.filter(name=params.span)
    counts = spans.aggregate(
        total=Count("id"), errors=Count("id", filter=Q(status=SpanStatus.ERROR))
    )
    total, errors = counts["total"] or 0, counts["errors"] or 0
    subject = "/".join(part for part in (params.service, params.span) if part) or "all spans"
    if total < params.min_spans:
        return [Observation(subject, None, False, f"{subject}: {total} spans, too few to judge")]
    rate = errors / total * 100.0
    return [
        Observation(
            subject,
            round(rate, 3),
            rate > params.threshold,
            f"{subject}: {errors} of {total} spans failed ({rate:.1f} %) "
            f"in the last {params.window:g}s",
        )
    ]


def _increase_of(
    subject: str, total: float, params: CountParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    seen = memory.increase((key, subject), total, now, params.window)
    count = 0.0 if seen is None else seen[0]
    return [
        Observation(
            subject,
            count,
            count > params.threshold,
            f"{count:g} {subject} in the last {params.window:g}s",
        )
    ]


def _span_drops(
    params: CountParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    from dashboard.traces import tracing

    return _increase_of(
        "dropped spans", float(tracing.stats()["dropped"]), params, memory, key, now
    )


def _checkpoint_failures_source(
    params: CountParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    total = float(checkpoint_verification_failures())
    return _increase_of("checkpoint verification failures", total, params, memory, key, now)


_EVALUATORS: dict[str, Callable[[Any, SampleMemory, Any, float], list[Observation]]] = {
    RuleKind.BREAKER_OPEN: _breakers,
    RuleKind.LIMITER_REJECTIONS: _limiters,
    RuleKind.METRIC_THRESHOLD: _metrics,
    RuleKind.SPAN_ERROR_RATE: _span_errors,
    RuleKind.SPAN_DROPS: _span_drops,
    RuleKind.CHECKPOINT_FAILURES: _checkpoint_failures_source,
}
