"""Typed request and response bodies of the observability API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema

from dashboard.audit import MAX_REASON
from dashboard.fleet.schemas import BreakerGroupOut, LimiterGroupOut

HealthStatus = Literal["ok", "degraded", "down"]
BreakerStateName = Literal["closed", "open", "half_open", "forced_open", "disabled"]
TraceSort = Literal["recent", "longest", "spans", "errors"]

TRACE_ID_PATTERN = r"^[0-9a-fA-F]{32}$"
CHECKPOINT_ID_PATTERN = r"^ck_[0-9a-f]{14}_[0-9a-f]{12}$"


# ---- errors ----------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str


class ValidationIssue(Schema):
    type: str
    loc: list[str | int]
    msg: str
    ctx: dict[str, Any] | None = None


class ValidationErrorOut(Schema):
    detail: list[ValidationIssue]


# ---- pagination ------------------------------------------------------------------------


class PageIn(Schema):
    page: int = Field(1, ge=1, le=100_000)
    page_size: int = Field(50, ge=1, le=500)


class Page(Schema):
    page: int
    page_size: int
    total: int
    has_next: bool


# ---- circuit breakers ------------------------------------------------------------------


class BreakerCallsOut(Schema):
    successful: int
    failed: int
    rejected: int
    ignored: int
    slow: int


class LastFailureOut(Schema):
    type: str
    message: str
    time: float


class BreakerConfigOut(Schema):
    failure_threshold: int
    success_threshold: int
    timeout: float
    half_open_max_calls: int
    failure_exceptions: list[str]
    ignored_exceptions: list[str]
    sliding_window_size: int | None
    minimum_calls: int | None
    failure_rate_threshold: float | None
    slow_call_duration: float | None
    call_timeout: float | None = None


class BreakerOut(Schema):
    name: str
    state: BreakerStateName
    failure_count: int
    success_count: int
    failure_rate: float | None = Field(description="percent; None when not computed")
    opened_at: float | None = Field(description="seconds since the epoch")
    seconds_until_half_open: float | None
    last_failure: LastFailureOut | None
    half_open_calls_in_flight: int
    half_open_max_calls: int
    calls: BreakerCallsOut
    config: BreakerConfigOut


class BreakerListOut(Schema):
    items: list[BreakerOut] = Field(description="the breakers of the process answering")
    count: int = Field(description="len(items)")
    fleet: list[BreakerGroupOut] = Field(
        default_factory=list,
        description="breakers of the fleet's worker processes (instances not gone), "
        "grouped by name, worst state first, each with its instances",
    )
    fleet_count: int = Field(0, description="len(fleet)")


class ReasonIn(Schema):
    reason: str = Field("", max_length=MAX_REASON, description="why (kept in the audit trail)")


class BreakerEventOut(Schema):
    id: int
    breaker: str
    from_state: BreakerStateName
    to_state: BreakerStateName
    reason: str
    failure_count: int
    failure_rate: float | None
    occurred_at: datetime
    process: str
    actor: str = Field(description="user of a manual action; empty when automatic")
    note: str


class BreakerEventPageOut(Page):
    items: list[BreakerEventOut]


# ---- rate limiters ---------------------------------------------------------------------


class BusyKeyOut(Schema):
    key: str
    allowed: int
    rejected: int
    available_tokens: float


class LimiterOut(Schema):
    name: str
    kind: Literal["bucket", "keyed"]
    max_requests: int
    time_window: float
    burst_size: int
    capacity: int
    rate: float = Field(description="tokens refilled per second")
    available_tokens: float | None = Field(description="None for a keyed limiter")
    allowed: int
    rejected: int
    keys: int | None = None
    max_keys: int | None = None
    evictions: int | None = None
    evictions_not_full: int | None = None
    busiest_keys: list[BusyKeyOut] | None = None


class LimiterListOut(Schema):
    items: list[LimiterOut] = Field(description="the limiters of the process answering")
    count: int = Field(description="len(items)")
    fleet: list[LimiterGroupOut] = Field(
        default_factory=list,
        description="limiters of the fleet's worker processes, grouped by name, each with "
        "its instances",
    )
    fleet_count: int = Field(0, description="len(fleet)")


# ---- metrics ---------------------------------------------------------------------------


class HistogramOut(Schema):
    count: int
    sum: float
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class MetricsOut(Schema):
    counters: dict[str, float]
    gauges: dict[str, float]
    histograms: dict[str, HistogramOut]


class MutationOut(Schema):
    detail: str
    audit_id: int = Field(description="the AuditEntry recording who, when and why")


# ---- traces ----------------------------------------------------------------------------


class TraceFilters(Schema):
    service: str = Field("", max_length=255)
    caller: str = Field(
        "",
        max_length=255,
        description="the span's parent is of this service and the span is not (a call "
        "from caller to service, as on a service map edge)",
    )
    name: str = Field("", max_length=255, description="span name")
    attribute: str = Field(
        "", max_length=500, description="key=value that one span's attributes must match"
    )
    errors_only: bool = False
    min_duration_us: int | None = Field(None, ge=0, le=10**15)
    max_duration_us: int | None = Field(None, ge=0, le=10**15)
    since: datetime | None = None
    until: datetime | None = None
    sort: TraceSort = "recent"


class TraceRowOut(Schema):
    trace_id: str
    root_name: str
    root_service: str
    start: datetime
    duration_us: int
    span_count: int
    error_count: int


class TracePageOut(Page):
    total_capped: bool = Field(description="True when total stopped counting at the cap")
    items: list[TraceRowOut]


class SpanOut(Schema):
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start: datetime
    duration_us: int
    self_us: int = Field(description="time not covered by child spans")
    depth: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]] = Field(description="[{trace_id, span_id, attributes}]")
    on_critical_path: bool = Field(
        description="part of the chain of spans that sets the trace's end-to-end time"
    )


class TraceOut(Schema):
    trace_id: str
    start: datetime
    duration_us: int
    span_count: int
    error_count: int
    services: list[str]
    max_depth: int
    truncated: bool
    spans: list[SpanOut]


# ---- checkpoints -----------------------------------------------------------------------


class CheckpointOut(Schema):
    checkpoint_id: str
    agent_id: str
    workflow_id: str
    created_at: datetime
    raw_size: int
    stored_size: int
    ratio: float
    sha256: str
    codec: str
    metadata: dict[str, Any]


class CheckpointPageOut(Page):
    items: list[CheckpointOut]


class CheckpointFilters(Schema):
    agent_id: str | None = Field(None, max_length=128)
    workflow_id: str | None = Field(None, max_length=128)


class CleanupIn(Schema):
    keep_last: int | None = Field(
        None, ge=1, le=1_000_000, description="keep the newest N per group"
    )
    older_than: float | None = Field(
        None, gt=0, le=10**10, description="seconds; remove only checkpoints older than this"
    )
    dry_run: bool = False
    reason: str = Field("", max_length=MAX_REASON)


class CleanupOut(Schema):
    checkpoint_ids: list[str]
    count: int
    stored_bytes: int
    dry_run: bool


class DeletedOut(Schema):
    checkpoint_id: str
    deleted: bool


# ---- health ----------------------------------------------------------------------------


class HealthCheckOut(Schema):
    status: HealthStatus
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class HealthOut(Schema):
    status: HealthStatus
    checks: dict[str, HealthCheckOut] | None = Field(
        None, description="only for authenticated callers with the view permission"
    )
