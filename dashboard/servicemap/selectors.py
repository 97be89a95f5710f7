"""Reads for the service map: edges summed over a time range, breaker states, layout.

``now`` is a parameter so that tests choose the range's end without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from django.db import connection
from django.utils import timezone

from dashboard.fleet import conf as fleet_conf
from dashboard.fleet.models import FleetInstance
from dashboard.fleet.selectors import GONE, STATE_RANK, instance_status
from resilience.circuit_breaker import CircuitState, circuit_breaker_registry

from . import histogram
from .models import EdgeMinute

RANGES = {"5m": 5, "15m": 15, "1h": 60, "6h": 360, "24h": 1440}
RANGE_LABELS = {"5m": "Last 5 min", "15m": "Last 15 min", "1h": "Last hour",
                "6h": "Last 6 hours", "24h": "Last 24 hours"}  # fmt: skip
DEFAULT_RANGE = "15m"
UNKNOWN = "unknown"


def range_minutes(key: str) -> int:
    """Minutes of the range named ``key`` ("5m", "15m", "1h", "6h" or "24h")."""
    try:
        return RANGES[key]
    except (KeyError, TypeError):
        raise ValueError(f"range must be one of {', '.join(RANGES)}, got {key!r}") from None


@dataclass(frozen=True, slots=True)
class BreakerBadge:
    name: str
    state: str  # a CircuitState value ("closed", "open", ...) or "unknown"
    source: str  # "fleet" (reported by the caller's workers), "local" (this process), ""


@dataclass(frozen=True, slots=True)
class Edge:
    caller: str
    callee: str
    calls: int
    errors: int
    rate_per_s: float
    error_rate: float  # 0..1
    p95_ms: float | None  # geometric middle of the p95's log bucket (within ~9 %)
    mean_ms: float | None
    breakers: tuple[BreakerBadge, ...]
    # The trace search's GET parameters for this edge's calls: the callee's spans called
    # by the caller when the callee reports spans, else the caller's CLIENT spans naming it.
    trace_filter: dict[str, str]

    @property
    def error_percent(self) -> float:
        return self.error_rate * 100

    @property
    def rate_label(self) -> str:
        """Calls per second, or per minute when under one every 10 seconds."""
        if self.rate_per_s >= 0.1:
            return f"{self.rate_per_s:.1f}/s"
        return f"{self.rate_per_s * 60:.1f}/min"


@dataclass(frozen=True, slots=True)
class ServiceMap:
    range: str
    since: datetime
    until: datetime
    services: tuple[str, ...]
    edges: tuple[Edge, ...]


@dataclass(slots=True)
class _Sum:
    calls: int = 0
    errors: int = 0
    total_us: int = 0
    hist: dict[str, int] = field(default_factory=dict)
    breakers: set[str] = field(default_factory=set)
    peer_keys: set[str] = field(default_factory=set)


def _fleet_states(callers: set[str], now: datetime) -> dict[tuple[str, str], str]:
    """Worst state of each (service, breaker) among the fleet's instances not gone."""
    stale, gone = fleet_conf.stale_after(), fleet_conf.gone_after()
    states: dict[tuple[str, str], str] = {}
    holders = FleetInstance.objects.filter(service__in=callers, last_seen__gt=now - gone)
    for holder in holders.only("service", "last_seen", "breakers"):
        status = instance_status(
            last_seen=holder.last_seen, now=now, stale_after=stale, gone_after=gone
        )
        if status == GONE:
            continue
        for snap in holder.breakers or []:
            if not isinstance(snap, dict) or not snap.get("name"):
                continue
            key = (holder.service, str(snap["name"]))
            state = str(snap.get("state", CircuitState.CLOSED.value))
            if STATE_RANK.get(state, 9) < STATE_RANK.get(states.get(key, ""), 10):
                states[key] = state
    return states


def breaker_badges(
    wanted: dict[tuple[str, str], set[str]], *, now: datetime
) -> dict[tuple[str, str], tuple[BreakerBadge, ...]]:
    """Badges for each edge's breakers: the caller's fleet instances first, then the
    breakers registered in this process, else unknown."""
    callers = {caller for (caller, _), names in wanted.items() if names}
    fleet = _fleet_states(callers, now) if callers else {}
    local: dict[str, str] = {}
    badges: dict[tuple[str, str], tuple[BreakerBadge, ...]] = {}
    for (caller, callee), names in wanted.items():
        found = []
        for name in sorted(names):
            if (caller, name) in fleet:
                found.append(BreakerBadge(name, fleet[(caller, name)], "fleet"))
                continue
            if name not in local:
                breaker = circuit_breaker_registry.get(name)
                # snapshot() applies a due OPEN -> HALF_OPEN first (see dashboard.selectors).
                local[name] = str(breaker.snapshot()["state"]) if breaker else UNKNOWN
            found.append(BreakerBadge(name, local[name], "local" if local[name] != UNKNOWN else ""))
        badges[(caller, callee)] = tuple(found)
    return badges


def _trace_filter(caller: str, callee: str, peer_keys: set[str], range_key: str) -> dict[str, str]:
    if "" in peer_keys or not peer_keys:
        return {"service": callee, "caller": caller, "lookback": range_key}
    return {"service": caller, "attr": f"{min(peer_keys)}={callee}", "lookback": range_key}


def service_map(*, range_key: str = DEFAULT_RANGE, now: datetime | None = None) -> ServiceMap:
    """Edges over the last ``range_key``, summed from the rollup (call ``rollup`` first)."""
    minutes = range_minutes(range_key)
    now = now or timezone.now()
    now_s = int(now.timestamp())
    first = (now_s - minutes * 60) // 60
    seconds = max(now_s - first * 60, 1)
    sums: dict[tuple[str, str], _Sum] = {}
    rows = EdgeMinute.objects.filter(minute__gte=first, minute__lte=now_s // 60).values_list(
        "caller", "callee", "breaker", "peer_key", "calls", "errors", "duration_sum_us", "histogram"
    )
    # Raw rows and orjson: Django's JSON converter per row costs more than the sums.
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    for caller, callee, breaker, peer_key, calls, errors, total_us, hist in fetched:
        entry = sums.get((caller, callee))
        if entry is None:
            entry = sums[(caller, callee)] = _Sum()
        entry.calls += calls
        entry.errors += errors
        entry.total_us += total_us
        counts = entry.hist
        for key, count in (orjson.loads(hist) if isinstance(hist, str | bytes) else hist).items():
            counts[key] = counts.get(key, 0) + count
        entry.peer_keys.add(peer_key)
        if breaker:
            entry.breakers.add(breaker)
    badges = breaker_badges({key: s.breakers for key, s in sums.items()}, now=now)
    edges = []
    for (caller, callee), entry in sorted(sums.items()):
        p95 = histogram.quantile_us({int(k): v for k, v in entry.hist.items()}, 0.95)
        edges.append(
            Edge(
                caller=caller,
                callee=callee,
                calls=entry.calls,
                errors=entry.errors,
                rate_per_s=entry.calls / seconds,
                error_rate=entry.errors / entry.calls if entry.calls else 0.0,
                p95_ms=None if p95 is None else p95 / 1000,
                mean_ms=entry.total_us / entry.calls / 1000 if entry.calls else None,
                breakers=badges[(caller, callee)],
                trace_filter=_trace_filter(caller, callee, entry.peer_keys, range_key),
            )
        )
    services = sorted({name for edge in edges for name in (edge.caller, edge.callee)})
    return ServiceMap(
        range=range_key,
        since=now - timedelta(seconds=seconds),
        until=now,
        services=tuple(services),
        edges=tuple(edges),
    )
