"""Read-side queries for pages and the API (keyword-only).

They write nothing, with one effect to know about: reading a breaker (its ``snapshot()``)
first applies a due OPEN → HALF_OPEN transition, exactly as a call through it would, and
that transition is published on the event bus (so it is recorded and pushed like any
other). A page never shows a breaker as OPEN after its open timeout has passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.breakers.models import BreakerEvent
from dashboard.traces.models import SpanRecord, SpanStatus, TraceSummary
from resilience.circuit_breaker import CircuitBreaker, CircuitState, circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry

BREAKER_STATES = (  # the overview's order
    CircuitState.CLOSED,
    CircuitState.HALF_OPEN,
    CircuitState.OPEN,
    CircuitState.FORCED_OPEN,
    CircuitState.DISABLED,
)
# Breakers in these states reject every call.
BLOCKING_STATES = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN})
# A span "caused" a breaker failure when it ended within this long of the failure.
_FAILURE_TRACE_SLACK = timedelta(milliseconds=250)


def breaker_overview(*, history: int = 5) -> list[dict[str, Any]]:
    """Each registered breaker's snapshot plus its latest ``history`` transitions."""
    snapshots = [breaker.snapshot() for breaker in circuit_breaker_registry.all()]
    recent: dict[str, list[BreakerEvent]] = {s["name"]: [] for s in snapshots}
    if snapshots and history > 0:
        # One query per breaker keeps each read on the (breaker, -occurred_at) index.
        for name in recent:
            recent[name] = list(BreakerEvent.objects.filter(breaker=name)[:history])
    return [{**snap, "history": recent[snap["name"]]} for snap in snapshots]


def limiter_overview() -> list[dict[str, Any]]:
    """Each registered rate limiter's snapshot."""
    return [limiter.snapshot() for limiter in rate_limiter_registry.all()]


def breaker_history(*, name: str, limit: int = 10) -> list[BreakerEvent]:
    """The latest ``limit`` transitions of the breaker ``name``, newest first."""
    return list(BreakerEvent.objects.filter(breaker=name)[:limit])


def failure_trace_id(*, last_failure: Mapping[str, Any] | None) -> str | None:
    """The trace of the error span that ended at the breaker's last failure, if recorded."""
    if not last_failure or not isinstance(last_failure.get("time"), int | float):
        return None
    when = datetime.fromtimestamp(last_failure["time"], tz=UTC)
    span = (
        SpanRecord.objects.filter(
            status=SpanStatus.ERROR,
            start__lte=when + _FAILURE_TRACE_SLACK,
            end__gte=when - _FAILURE_TRACE_SLACK,
        )
        .order_by("-start")
        .values_list("trace_id", flat=True)
        .first()
    )
    return span


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerCard:
    """Everything a breaker's card shows; built by :func:`card_for` only, for the page, a
    socket's first message, a pushed transition and an action's answer alike."""

    name: str
    state: CircuitState
    failure_count: int
    failure_rate: float | None
    calls: Mapping[str, int]
    config: Mapping[str, Any]
    half_open_calls_in_flight: int
    half_open_max_calls: int
    seconds_until_half_open: float | None
    last_failure: Mapping[str, Any] | None
    trace_id: str | None  # the trace of the call behind last_failure, if recorded
    history: tuple[BreakerEvent, ...]  # newest first; empty when not asked for


def card_for(breaker: CircuitBreaker, *, history: int = 10) -> BreakerCard:
    """The card of ``breaker``: its snapshot, the failing trace if known, and its latest
    ``history`` transitions (queries the database; see the module doc for the one effect)."""
    snap = breaker.snapshot()
    return BreakerCard(
        name=snap["name"],
        state=CircuitState(snap["state"]),
        failure_count=snap["failure_count"],
        failure_rate=snap["failure_rate"],
        calls=snap["calls"],
        config=snap["config"],
        half_open_calls_in_flight=snap["half_open_calls_in_flight"],
        half_open_max_calls=snap["half_open_max_calls"],
        seconds_until_half_open=snap["seconds_until_half_open"],
        last_failure=snap["last_failure"],
        trace_id=failure_trace_id(last_failure=snap["last_failure"]),
        history=tuple(breaker_history(name=snap["name"], limit=history)) if history else (),
    )


def breaker_cards(*, history: int = 10, names: list[str] | None = None) -> list[BreakerCard]:
    """The cards of every registered breaker (or of those in ``names``)."""
    breakers = circuit_breaker_registry.all()
    if names is not None:
        wanted = set(names)
        breakers = [b for b in breakers if b.name in wanted]
    return [card_for(breaker, history=history) for breaker in breakers]


def state_counts(breakers: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(state, how many breakers are in it) for every state, in a fixed order."""
    counts = Counter(b["state"] for b in breakers)
    return [(state, counts.get(state, 0)) for state in BREAKER_STATES]


def health(breakers: list[dict[str, Any]]) -> str:
    """``ok`` when every breaker lets calls through, ``degraded`` when some do not,
    ``down`` when none does."""
    blocked = sum(1 for b in breakers if b["state"] in BLOCKING_STATES)
    if not blocked:
        return "ok"
    return "down" if blocked == len(breakers) else "degraded"


def busiest_limiters(limiters: list[dict[str, Any]], *, limit: int = 5) -> list[dict[str, Any]]:
    """Limiters with the most rejections first (those that rejected nothing left out)."""
    rejecting = [lim for lim in limiters if lim.get("rejected")]
    return sorted(rejecting, key=lambda lim: -lim["rejected"])[:limit]


def recent_error_spans(*, limit: int = 8) -> list[SpanRecord]:
    """The latest error spans (uses the partial ``span_error_start`` index)."""
    return list(
        SpanRecord.objects.filter(status=SpanStatus.ERROR)
        .order_by("-start")
        .only("trace_id", "span_id", "name", "service", "start", "status_message")[:limit]
    )


def recent_traces(*, limit: int = 8) -> list[TraceSummary]:
    """The latest traces by start time."""
    return list(TraceSummary.objects.order_by("-start_us")[:limit])
