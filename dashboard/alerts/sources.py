"""What each kind of rule watches: every kind is registered here, once, in
:data:`RULE_KINDS` with its parameters (:mod:`.params`) and its evaluator.

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
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from dashboard.selectors import BLOCKING_STATES
from resilience import telemetry
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.events import BreakerStateChanged, CheckpointCorrupted, Event
from resilience.rate_limiter import rate_limiter_registry

from .kinds import Evaluation, Observation, RuleError, RuleKindRegistry, SampleMemory
from .models import RuleKind
from .params import (
    AGGREGATES,
    OPS,
    BreakerParams,
    CountParams,
    LimiterParams,
    MetricParams,
    SpanErrorParams,
)

__all__ = [
    "RULE_KINDS",
    "Observation",
    "RuleError",
    "SampleMemory",
    "checkpoint_verification_failures",
    "evaluate",
    "on_event",
    "parse_parameters",
    "report_checkpoint_verification_failure",
]

RULE_KINDS = RuleKindRegistry()
"""Every kind of rule, registered below with its parameters and evaluator."""


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


# ---- evaluation ----------------------------------------------------------------------------


def parse_parameters(kind: str, parameters: Mapping[str, Any]) -> Any:
    """Check a rule's parameters; returns them as the kind's frozen dataclass.

    Raises:
        ValueError / TypeError: unknown kind, unknown or missing parameter, bad value;
            the message names the parameter and the value.
    """
    return RULE_KINDS.parse(kind, parameters)


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
    return RULE_KINDS.evaluate(kind, parameters, Evaluation(memory, key, now))


@RULE_KINDS.register(RuleKind.BREAKER_OPEN, params=BreakerParams)
def _breakers(params: BreakerParams, at: Evaluation) -> list[Observation]:
    memory, key, now = at.memory, at.key, at.now
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
    result.extend(_fleet_breakers(params, memory, key, now))
    return result


def _fleet_breakers(
    params: BreakerParams, memory: SampleMemory, key: Any, now: float
) -> list[Observation]:
    """A breaker on any fleet instance (worker process), one subject per ``name@instance``.

    Openings between two looks are read from the transitions the instances reported
    (history rows newer than the last one seen), so an open-and-closed-again still fires.
    """
    from dashboard.breakers.models import BreakerEvent
    from dashboard.fleet.primitives import fleet_breakers

    seen_id = memory.mark((key, "fleet-event-id"), None)
    latest = BreakerEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    memory.mark((key, "fleet-event-id"), latest)
    opened: set[tuple[str, str]] = set()
    if seen_id is not None and latest > seen_id:
        opened = set(
            BreakerEvent.objects.filter(
                id__gt=seen_id, id__lte=latest, to_state__in=[str(s) for s in _OPEN_STATES]
            ).values_list("breaker", "process")[:10_000]
        )
    result = []
    for row in fleet_breakers():
        name = row["name"]
        if not fnmatch.fnmatchcase(name, params.breaker) or (
            params.exclude and fnmatch.fnmatchcase(name, params.exclude)
        ):
            continue
        subject = f"{name}@{row['label']}"[:300]
        state = str(row["snapshot"].get("state", ""))
        flapped = (name, row["label"][:200]) in opened and state not in params.states
        active = state in params.states or flapped
        since = memory.mark((key, "since", subject), None)
        if active:
            since = now if since is None else since
            memory.mark((key, "since", subject), since)
        elapsed = now - since if active and since is not None else 0.0
        where = f"on instance {row['label']} ({row['instance']})"
        if flapped:
            message = f"breaker {name} opened and is {state} again {where}"
        else:
            message = f"breaker {name} is {state} {where}"
        result.append(Observation(subject, round(elapsed, 3), active, message))
    return result


@RULE_KINDS.register(RuleKind.LIMITER_REJECTIONS, params=LimiterParams)
def _limiters(params: LimiterParams, at: Evaluation) -> list[Observation]:
    result = []
    for limiter in rate_limiter_registry.all():
        name = limiter.name
        if name is None or not fnmatch.fnmatchcase(name, params.limiter):
            continue
        seen = at.memory.increase((at.key, name), float(limiter.rejected), at.now, params.window)
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


@RULE_KINDS.register(RuleKind.METRIC_THRESHOLD, params=MetricParams)
def _metrics(params: MetricParams, at: Evaluation) -> list[Observation]:
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
            seen = at.memory.increase((at.key, name), float(raw), at.now, params.window)
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


@RULE_KINDS.register(RuleKind.SPAN_ERROR_RATE, params=SpanErrorParams)
def _span_errors(params: SpanErrorParams, at: Evaluation) -> list[Observation]:
    from dashboard.traces.models import SpanRecord, SpanStatus

    since = datetime.fromtimestamp(at.now, tz=UTC) - timedelta(seconds=params.window)
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
    subject: str, total: float, params: CountParams, at: Evaluation
) -> list[Observation]:
    seen = at.memory.increase((at.key, subject), total, at.now, params.window)
    count = 0.0 if seen is None else seen[0]
    return [
        Observation(
            subject,
            count,
            count > params.threshold,
            f"{count:g} {subject} in the last {params.window:g}s",
        )
    ]


@RULE_KINDS.register(RuleKind.SPAN_DROPS, params=CountParams)
def _span_drops(params: CountParams, at: Evaluation) -> list[Observation]:
    from dashboard.traces import tracing

    return _increase_of("dropped spans", float(tracing.stats()["dropped"]), params, at)


@RULE_KINDS.register(RuleKind.CHECKPOINT_FAILURES, params=CountParams)
def _checkpoint_failures_source(params: CountParams, at: Evaluation) -> list[Observation]:
    total = float(checkpoint_verification_failures())
    return _increase_of("checkpoint verification failures", total, params, at)
