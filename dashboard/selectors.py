"""Read-side queries for pages and the API (keyword-only, no side effects)."""

from __future__ import annotations

from typing import Any

from dashboard.breakers.models import BreakerEvent
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry


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
