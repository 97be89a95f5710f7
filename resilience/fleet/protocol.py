"""The fleet protocol, version 1: what a worker sends and what the dashboard answers.

Every exchange starts at the worker (as in OpenTelemetry's OpAMP): it POSTs a
*report* about once a second, and the dashboard answers it with the *commands* that
wait for this instance. There is no separate announce message: every report carries
the instance block, so a dashboard that restarted (or a second server behind a load
balancer) learns the instance from whichever report reaches it first.

A report is always complete for breakers and limiters (their current snapshots), so a
lost report costs nothing but freshness. Transition events and command acks are
*delivered at least once*: the worker keeps them until a report carrying them is
answered with 2xx, and the dashboard de-duplicates acks by command id. The dashboard
repeats an unacknowledged command in every answer until it is acked or expires; the
worker applies each command id once and acks repeats with the first result.

Over HTTP a worker also holds a long-poll, ``GET /api/fleet/v1/commands?instance=<id>
&wait=<seconds>`` (:data:`COMMANDS_PATH`), which the dashboard answers with an Answer as
soon as a command for that instance is queued (or with none after ``wait``), so a
command does not wait for the next report.

Over Redis (``REDIS_URL``) the messages are the same, in Redis streams, so that
commands are pushed rather than waiting for the next report:

- a worker ``XADD``s each report to ``resilience:fleet:v1:reports`` (field
  ``report``: the report's JSON; ``MAXLEN ~ 10000``). The dashboard's servers read it
  as one consumer group, ``dashboard`` (``XREADGROUP``), so each report is stored by
  exactly one server however many run;
- a server ``XADD``s an Answer (field ``answer``: its JSON) to
  ``resilience:fleet:v1:commands:<instance id>`` when an operator acts, and again
  after each report while commands wait for an ack; the worker reads that stream with a
  blocking ``XREAD`` from ``0`` (the instance id is new at each start, so the stream
  holds only what was meant for this process). Acks ride on the worker's next report,
  sent at once. Anyone who can write to that Redis can report and command: keep it
  private (AUTH, TLS, loopback), as for the Redis-shared breakers;
- a worker's checkpoint metadata (a CheckpointsMessage) goes to the same reports stream
  with the field ``checkpoints`` instead of ``report``; nothing is answered (the
  dashboard records it, or logs why not).

The JSON Schema of both messages is ``protocol.schema.json`` beside this module
(:func:`schema_path`); it is the reference for an implementation in another language.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, TypedDict

__all__ = [
    "ACTIONS",
    "COMMANDS_PATH",
    "MAX_NAME",
    "MAX_PRIMITIVES",
    "PROTOCOL_VERSION",
    "REDIS_ANSWER_FIELD",
    "REDIS_CHECKPOINTS_FIELD",
    "REDIS_COMMANDS_PREFIX",
    "REDIS_GROUP",
    "REDIS_REPORTS_KEY",
    "REDIS_REPORTS_MAXLEN",
    "REDIS_REPORT_FIELD",
    "REPORT_PATH",
    "Ack",
    "Answer",
    "Command",
    "InstanceInfo",
    "Report",
    "TransitionEvent",
    "encode",
    "redis_commands_key",
    "schema",
    "schema_path",
]

PROTOCOL_VERSION = 1
REPORT_PATH = "/api/fleet/v1/report"
COMMANDS_PATH = "/api/fleet/v1/commands"
"""The HTTP long-poll: ``GET ?instance=<id>&wait=<seconds>`` answers an Answer."""
MAX_PRIMITIVES = 1000
"""Breakers (and limiters) per report at most; a worker sends the first by name."""
MAX_NAME = 200

# The Redis transport: the same messages, in Redis streams (see the module doc).
REDIS_REPORTS_KEY = "resilience:fleet:v1:reports"
"""The stream every worker XADDs its reports to (field ``report``: the Report's JSON)."""
REDIS_REPORT_FIELD = "report"
REDIS_CHECKPOINTS_FIELD = "checkpoints"
"""An entry of the reports stream with this field instead carries a CheckpointsMessage."""
REDIS_REPORTS_MAXLEN = 10_000
"""Workers trim the reports stream to about this many entries (``MAXLEN ~``)."""
REDIS_GROUP = "dashboard"
"""The consumer group of the dashboard's servers on the reports stream."""
REDIS_COMMANDS_PREFIX = "resilience:fleet:v1:commands:"
"""Followed by the instance id: the stream of Answers for that instance."""
REDIS_ANSWER_FIELD = "answer"
ACTIONS = ("reset", "force_open", "disable")

Action = Literal["reset", "force_open", "disable"]


class InstanceInfo(TypedDict):
    """Who is reporting: one process, for as long as it runs."""

    id: str
    service: str
    host: str
    pid: int
    version: str
    language: str
    started_at: float


class TransitionEvent(TypedDict):
    """A breaker changed state in the worker (``time``: epoch seconds)."""

    kind: Literal["breaker_state"]
    name: str
    from_state: str
    to_state: str
    reason: str
    time: float
    failure_count: int
    failure_rate: float | None
    actor: str | None
    note: str | None


class Ack(TypedDict):
    """The outcome of one command: ``ok`` False carries ``error``; ``state`` is after."""

    command_id: str
    ok: bool
    error: str | None
    state: str | None
    applied_at: float


class Stats(TypedDict):
    """Counters of the worker's reporter since it started."""

    reports_sent: int
    reports_failed: int
    events_dropped: int


class Report(TypedDict):
    """What the worker POSTs (``sent_at``: epoch seconds, ``seq`` counts up from 1)."""

    protocol: int
    instance: InstanceInfo
    seq: int
    sent_at: float
    breakers: list[dict[str, Any]]
    limiters: list[dict[str, Any]]
    events: list[TransitionEvent]
    acks: list[Ack]
    stats: Stats


class Command(TypedDict):
    """An operator action the dashboard asks this instance to apply to one breaker."""

    id: str
    kind: Literal["breaker"]
    target: str
    action: Action
    actor: str | None
    reason: str | None


class Answer(TypedDict, total=False):
    """The dashboard's answer to a report (``report_interval``: seconds, optional)."""

    protocol: int
    commands: list[Command]
    report_interval: float


def redis_commands_key(instance_id: str) -> str:
    """The Redis stream an instance reads its Answers (commands) from."""
    return REDIS_COMMANDS_PREFIX + instance_id


def schema_path() -> Path:
    """The path of the protocol's JSON Schema (shipped with the package)."""
    return Path(__file__).with_name("protocol.schema.json")


def schema() -> dict[str, Any]:
    """The protocol's JSON Schema, parsed."""
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return loaded


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def encode(report: Report) -> bytes:
    """A report as UTF-8 JSON (RFC 8259: no NaN or Infinity, which become null).

    Values JSON cannot hold (a key object of a keyed limiter) become strings.
    """
    try:
        text = json.dumps(report, default=str, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(report), default=str, separators=(",", ":"))
    return text.encode()
