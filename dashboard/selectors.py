"""Read-side queries for pages and the API (keyword-only, no side effects)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard.breakers.models import BreakerEvent
from dashboard.traces.models import SpanRecord, SpanStatus, TraceSummary
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry

BREAKER_STATES = ("closed", "half_open", "open", "forced_open", "disabled")
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


def failure_trace_id(*, last_failure: dict[str, Any] | None) -> str | None:
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


def breaker_cards(*, history: int = 10, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Everything a breaker card shows: snapshot, history, and the failing trace if known."""
    breakers = circuit_breaker_registry.all()
    if names is not None:
        wanted = set(names)
        breakers = [b for b in breakers if b.name in wanted]
    cards = []
    for breaker in breakers:
        snap = breaker.snapshot()
        cards.append(
            {
                **snap,
                "history": breaker_history(name=snap["name"], limit=history) if history else [],
                "trace_id": failure_trace_id(last_failure=snap["last_failure"]),
            }
        )
    return cards


def state_counts(breakers: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(state, how many breakers are in it) for every state, in a fixed order."""
    counts = Counter(b["state"] for b in breakers)
    return [(state, counts.get(state, 0)) for state in BREAKER_STATES]


def health(breakers: list[dict[str, Any]]) -> str:
    """``ok`` when every breaker lets calls through, ``degraded`` when some do not,
    ``down`` when none does."""
    blocked = sum(1 for b in breakers if b["state"] in ("open", "forced_open"))
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
