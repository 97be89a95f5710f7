"""The fleet's API schemas (no import of the API package: its schemas import these)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Field, Schema

Liveness = Literal["live", "stale", "gone"]


class InstanceOut(Schema):
    id: str
    service: str
    host: str
    pid: int
    label: str = Field(description="service@host:pid, as history rows name it")
    version: str
    language: str
    status: Liveness
    started_at: datetime
    last_seen: datetime
    uptime_seconds: float
    seconds_since_report: float
    reports: int
    reports_failed: int
    events_dropped: int
    breakers: int
    limiters: int
    transport: Literal["http", "redis"] = Field(description="how its last report came")


class InstanceListOut(Schema):
    items: list[InstanceOut]
    count: int


class CommandOut(Schema):
    id: str
    batch: str
    action: str
    status: Literal["pending", "applied", "failed", "unreachable"]
    actor: str
    reason: str
    created_at: datetime
    acked_at: datetime | None
    result_state: str
    error: str


class InstanceBreakerOut(Schema):
    instance: str
    label: str
    service: str = ""
    status: Liveness
    state: str
    failure_count: int
    calls: dict[str, int]
    command: CommandOut | None = Field(description="the latest command for it on this instance")


class BreakerGroupOut(Schema):
    name: str
    state: str = Field(description="the worst state across instances")
    instances: list[InstanceBreakerOut]
    live_instances: int
    calls: int
    failures: int
    rejections: int
    state_counts: dict[str, int]


class BreakerGroupListOut(Schema):
    items: list[BreakerGroupOut]
    count: int


class InstanceLimiterOut(Schema):
    instance: str
    label: str
    service: str = ""
    status: Liveness
    allowed: int
    rejected: int
    available_tokens: float | None


class LimiterGroupOut(Schema):
    name: str
    instances: list[InstanceLimiterOut]
    allowed: int
    rejected: int


class LimiterGroupListOut(Schema):
    items: list[LimiterGroupOut]
    count: int
