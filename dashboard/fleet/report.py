"""Parse and validate a worker's report (protocol v1): hostile input becomes a ValueError.

The rules mirror ``resilience/fleet/protocol.schema.json``; they also keep every
value inside what the database columns hold (no NUL characters, bounded integers,
finite times), so a malformed report is a 400 and never a 500.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from resilience.circuit_breaker import CircuitState

STATES = tuple(state.value for state in CircuitState)
MAX_ITEMS = 1000
_MAX_TIME = 1e11  # epoch seconds, far beyond any real date
# Spelled out for the type checker and pydantic; test_vocabulary checks it equals STATES.
State = Literal["closed", "open", "half_open", "forced_open", "disabled"]
Time = Annotated[float, Field(ge=0, le=_MAX_TIME, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**62)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False, frozen=True)


class InstanceIn(_In):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    service: Annotated[str, Field(min_length=1, max_length=100)]
    host: Annotated[str, Field(min_length=1, max_length=255)]
    pid: Annotated[int, Field(ge=0, le=2**31 - 1)]
    version: Annotated[str, Field(max_length=50)] = ""
    language: Annotated[str, Field(max_length=30)] = "python"
    started_at: Time


class CallsIn(_In):
    successful: Count = 0
    failed: Count = 0
    rejected: Count = 0
    ignored: Count = 0
    slow: Count = 0


class BreakerIn(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: Name
    state: State
    failure_count: Count = 0
    calls: CallsIn = CallsIn()


class LimiterIn(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: Name
    allowed: Count = 0
    rejected: Count = 0


class EventIn(_In):
    kind: Literal["breaker_state"]
    name: Name
    from_state: State
    to_state: State
    reason: Annotated[str, Field(max_length=500)] = ""
    time: Time
    failure_count: Count = 0
    failure_rate: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    actor: Annotated[str, Field(max_length=150)] | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None


class AckIn(_In):
    command_id: Annotated[str, Field(max_length=64)]
    ok: bool
    error: Annotated[str, Field(max_length=2000)] | None = None
    state: State | None = None


class StatsIn(_In):
    reports_sent: Count = 0
    reports_failed: Count = 0
    events_dropped: Count = 0


class ReportIn(_In):
    protocol: Literal[1]
    instance: InstanceIn
    seq: Annotated[int, Field(ge=1, le=2**62)]
    sent_at: Time
    breakers: Annotated[list[BreakerIn], Field(max_length=MAX_ITEMS)]
    limiters: Annotated[list[LimiterIn], Field(max_length=MAX_ITEMS)]
    events: Annotated[list[EventIn], Field(max_length=MAX_ITEMS)] = []
    acks: Annotated[list[AckIn], Field(max_length=MAX_ITEMS)] = []
    stats: StatsIn = StatsIn()

    @field_validator("breakers", "limiters")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise ValueError("names must be unique")
        return items


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"numbers must be finite, got {name}")


Model = TypeVar("Model", bound=BaseModel)


def parse_message(body: bytes, model: type[Model], what: str = "message") -> Model:
    """The validated ``model`` in ``body`` (a fleet message: a report, checkpoints...).

    Raises:
        ValueError: the body is not JSON, holds a NUL character or a non-finite
            number, is nested too deeply, or breaks a rule of the protocol (the
            message names the field).
    """
    if b"\x00" in body or b"\\u0000" in body:
        raise ValueError(f"the {what} must not contain NUL characters")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"the {what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or what
        raise ValueError(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from None
    except RecursionError:
        raise ValueError(f"the {what} is nested too deeply") from None


def parse_report(body: bytes) -> ReportIn:
    """The validated report in ``body`` (:func:`parse_message`'s rules)."""
    return parse_message(body, ReportIn, "report")
