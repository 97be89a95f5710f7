"""Fake external services (a search API, an LLM endpoint, a payment service).

Each service follows a failure :class:`Pattern` - healthy, flaky, slow, down (for a
period or until changed) or a periodic outage - so breakers trip and recover and traces
show errors and slow spans. Patterns come from the ``WORKFLOW_SERVICES`` setting or a
JSON file (``WORKFLOW_SERVICES_FILE`` setting or environment variable) and an operator
can change them at runtime (the Simulation page). State lives in the memory of the
process that calls them, like the breakers that guard these services: the
``run_agents`` workers in ``make run`` (they follow the page's choices through
:mod:`.patterns`), or the server itself for the workflow API and ``RESILIENCE_DEMO``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from resilience._validate import duration, non_negative, positive
from resilience.errors import ConfigTypeError, ConfigValueError

Mode = Literal["healthy", "flaky", "slow", "down", "outage"]
MODES: tuple[str, ...] = get_args(Mode)
SERVICE_NAMES = ("search-api", "llm", "payments")


class ServiceError(Exception):
    """A fake service answered with an error (HTTP 5xx)."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service


class ServiceUnavailable(ServiceError):
    """A fake service is down: every call fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pattern:
    """How a fake service behaves.

    Args:
        mode: ``healthy``; ``flaky`` (fails with ``failure_rate``); ``slow`` (every call
            takes ``slow_ms``); ``down`` (every call fails, for ``down_for_s`` seconds
            after it is applied, or until changed when None); ``outage`` (down for
            ``outage_s`` of every ``period_s`` seconds, the first time ``offset_s``
            after the world starts).
        latency_ms / jitter_ms: normal response time, uniformly +- jitter.
        failure_rate: probability (0..1) that a call fails, in every mode but ``down``.
        slow_rate: probability (0..1) that a call takes ``slow_ms`` instead.

    Raises:
        ConfigValueError / ConfigTypeError: a value is out of range or of the wrong type.
    """

    mode: Mode = "healthy"
    latency_ms: float = 50.0
    jitter_ms: float = 0.0
    failure_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 1500.0
    down_for_s: float | None = None
    period_s: float = 40.0
    outage_s: float = 8.0
    offset_s: float = 5.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        set_ = object.__setattr__
        for field in ("latency_ms", "jitter_ms", "offset_s"):
            set_(self, field, non_negative(field, getattr(self, field)))
        for field in ("slow_ms", "period_s"):
            set_(self, field, positive(field, getattr(self, field)))
        set_(self, "outage_s", duration("outage_s", self.outage_s))
        for field in ("failure_rate", "slow_rate"):
            rate = non_negative(field, getattr(self, field))
            if rate > 1:
                raise ConfigValueError(f"{field} must be <= 1 (a probability), got {rate!r}")
            set_(self, field, rate)
        if self.jitter_ms > self.latency_ms:
            raise ConfigValueError(
                f"jitter_ms must be <= latency_ms ({self.latency_ms:g}), got {self.jitter_ms!r}"
            )
        if self.down_for_s is not None:
            set_(self, "down_for_s", duration("down_for_s", self.down_for_s, allow_zero=False))
        if self.outage_s > self.period_s:
            raise ConfigValueError(
                f"outage_s must be <= period_s ({self.period_s:g}), got {self.outage_s!r}"
            )
        if self.mode == "flaky" and self.failure_rate == 0:
            raise ConfigValueError("a flaky pattern needs failure_rate > 0, got 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pattern:
        """Build from JSON-ready values; unknown keys are an error naming them."""
        if not isinstance(data, Mapping):
            raise ConfigTypeError(f"a pattern must be a mapping, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigValueError(f"unknown pattern field(s) {', '.join(map(str, unknown))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for people: ``down for 30 s``, ``flaky (30% errors)``..."""
        if self.mode == "down":
            return "down" if self.down_for_s is None else f"down for {self.down_for_s:g} s"
        if self.mode == "outage":
            return (
                f"down {self.outage_s:g} s every {self.period_s:g} s (first at {self.offset_s:g} s)"
            )
        if self.mode == "slow":
            return f"slow ({self.slow_ms:g} ms per call)"
        text = f"{self.mode} ({self.latency_ms:g} ms"
        if self.failure_rate:
            text += f", {self.failure_rate:.0%} errors"
        return text + ")"


# What an operator can pick on the Simulation page; the service's own latency is kept.
PRESETS: dict[str, Pattern] = {
    "healthy": Pattern(),
    "flaky": Pattern(mode="flaky", failure_rate=0.5),
    "slow": Pattern(mode="slow", slow_ms=1500.0),
    "down-30s": Pattern(mode="down", down_for_s=30.0),
    "down": Pattern(mode="down"),
}

# Designed so that within 30 s of `make run` a breaker opens and closes again: the
# payment service is down for 8 s every 40 s, the first time 5 s after start.
DEFAULT_PATTERNS: dict[str, Pattern] = {
    "search-api": Pattern(mode="flaky", latency_ms=40.0, jitter_ms=20.0, failure_rate=0.05),
    "llm": Pattern(latency_ms=120.0, jitter_ms=60.0, failure_rate=0.02, slow_rate=0.02),
    "payments": Pattern(mode="outage", latency_ms=60.0, jitter_ms=20.0),
}


def preset(name: str, base: Pattern) -> Pattern:
    """The preset ``name`` keeping ``base``'s latency (``ValueError`` if unknown)."""
    if name not in PRESETS:
        raise ConfigValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    chosen = PRESETS[name]
    return replace(chosen, latency_ms=base.latency_ms, jitter_ms=base.jitter_ms)


class FakeService:
    """One service: its configured (default) pattern and the one in force now."""

    def __init__(self, name: str, pattern: Pattern, started: float) -> None:
        self.name = name
        self.default = pattern
        self.pattern = pattern
        self.applied_at = started
        self.calls = 0
        self.failures = 0

    def effective(self, now: float, started: float) -> tuple[Pattern, bool]:
        """(the pattern in force at ``now``, whether the service is down then)."""
        pattern = self.pattern
        if pattern.mode == "down":
            if pattern.down_for_s is None or now - self.applied_at < pattern.down_for_s:
                return pattern, True
            pattern = self.default if self.default.mode != "down" else Pattern()
        if pattern.mode == "outage":
            since = now - started - pattern.offset_s
            return pattern, since >= 0 and since % pattern.period_s < pattern.outage_s
        return pattern, False


class ServiceWorld:
    """The fake services of this process.

    Args:
        patterns: service name -> its default pattern.
        clock: monotonic seconds (outages and ``down_for_s`` are measured with it).
        sleep: how latency is simulated (tests pass a fake that advances the clock).
        seed: for the random failures and jitter (None: unpredictable).
    """

    def __init__(
        self,
        patterns: Mapping[str, Pattern],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._services = {
            name: FakeService(name, pattern, self.started) for name, pattern in patterns.items()
        }

    def names(self) -> list[str]:
        return list(self._services)

    def _get(self, name: str) -> FakeService:
        try:
            return self._services[name]
        except KeyError:
            raise ConfigValueError(
                f"service must be one of {', '.join(self._services)}, got {name!r}"
            ) from None

    def pattern(self, name: str) -> Pattern:
        """The pattern set for ``name`` now (``ValueError`` for an unknown service)."""
        return self._get(name).pattern

    def set_pattern(self, name: str, pattern: Pattern, *, age: float = 0.0) -> Pattern:
        """Apply ``pattern`` to ``name`` from now on; returns the previous pattern.

        ``age``: seconds since the pattern was chosen elsewhere (a worker applying an
        operator's change late), so ``down_for_s`` ends when it would have anyway.
        """
        if not isinstance(pattern, Pattern):
            raise ConfigTypeError(f"pattern must be a Pattern, got {pattern!r}")
        age = non_negative("age", age)
        service = self._get(name)
        with self._lock:
            previous, service.pattern = service.pattern, pattern
            service.applied_at = self.clock() - age
        return previous

    def default(self, name: str) -> Pattern:
        """The configured pattern of ``name`` (``ValueError`` for an unknown service)."""
        return self._get(name).default

    def restore(self, name: str) -> Pattern:
        """Go back to the configured pattern; returns the previous one."""
        return self.set_pattern(name, self._get(name).default)

    def call(self, name: str, operation: str) -> dict[str, Any]:
        """Call the fake service: waits its latency, then answers or raises.

        Raises:
            ServiceUnavailable: the service is down now.
            ServiceError: a random failure (``failure_rate``).
        """
        service = self._get(name)
        now = self.clock()
        with self._lock:
            pattern, down = service.effective(now, self.started)
            service.calls += 1
            rng = self._rng
            latency = pattern.latency_ms + rng.uniform(-pattern.jitter_ms, pattern.jitter_ms)
            if pattern.mode == "slow" or (pattern.slow_rate and rng.random() < pattern.slow_rate):
                latency = pattern.slow_ms + rng.uniform(0, pattern.jitter_ms)
            failed = down or (pattern.failure_rate > 0 and rng.random() < pattern.failure_rate)
            if failed:
                service.failures += 1
        self.sleep(max(latency, 0.0) / 1000)
        if down:
            raise ServiceUnavailable(name, f"{operation} failed: service unavailable (503)")
        if failed:
            raise ServiceError(name, f"{operation} failed: internal error (500)")
        return {"service": name, "operation": operation, "latency_ms": round(latency, 1)}

    def snapshot(self) -> list[dict[str, Any]]:
        """Each service's name, pattern, description, state now and call counts."""
        now = self.clock()
        rows = []
        with self._lock:
            for service in self._services.values():
                pattern, down = service.effective(now, self.started)
                remaining = None
                current = service.pattern
                if current.mode == "down" and current.down_for_s is not None:
                    remaining = max(current.down_for_s - (now - service.applied_at), 0.0)
                rows.append(
                    {
                        "name": service.name,
                        "pattern": current.to_dict(),
                        "description": current.describe(),
                        "is_default": current == service.default,
                        "down_now": down,
                        "down_remaining_s": remaining,
                        "calls": service.calls,
                        "failures": service.failures,
                    }
                )
        return rows


def load_patterns() -> dict[str, Pattern]:
    """The configured patterns: DEFAULT_PATTERNS updated from the file, then the setting.

    ``WORKFLOW_SERVICES_FILE`` (setting, else environment variable) names a JSON file
    ``{"payments": {"mode": "down"}, ...}``; ``WORKFLOW_SERVICES`` is the same mapping
    in settings. A service's entry replaces its whole default pattern.

    Raises:
        ImproperlyConfigured: unreadable file, unknown service or invalid pattern.
    """
    patterns = dict(DEFAULT_PATTERNS)
    path = getattr(settings, "WORKFLOW_SERVICES_FILE", None)
    sources: list[tuple[str, object]] = []
    if path:
        try:
            sources.append((str(path), json.loads(Path(path).read_text())))
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(f"WORKFLOW_SERVICES_FILE {path}: {exc}") from exc
    sources.append(("WORKFLOW_SERVICES", getattr(settings, "WORKFLOW_SERVICES", {})))
    for source, data in sources:
        if not isinstance(data, Mapping):
            raise ImproperlyConfigured(f"{source} must be a mapping of service -> pattern")
        for name, spec in data.items():
            if name not in patterns:
                raise ImproperlyConfigured(
                    f"{source}: unknown service {name!r} (one of {', '.join(patterns)})"
                )
            try:
                patterns[name] = Pattern.from_dict(spec)
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(f"{source}: {name}: {exc}") from exc
    return patterns


_lock = threading.Lock()
_world: ServiceWorld | None = None


def world() -> ServiceWorld:
    """The process's fake services, built from the configuration on first use."""
    global _world
    with _lock:
        if _world is None:
            _world = ServiceWorld(load_patterns())
        return _world


def install(new: ServiceWorld | None) -> ServiceWorld | None:
    """Replace the process's world (tests); None rebuilds it on next use. Returns the old."""
    global _world
    with _lock:
        previous, _world = _world, new
    return previous
