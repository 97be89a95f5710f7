"""Scrape-time metrics of every circuit breaker and rate limiter, under resilience4j's names.

Existing Grafana dashboards for resilience4j (Spring Boot + Micrometer + Prometheus)
query these names, so they read ours unchanged. Nothing runs on the hot path: the
collector reads each primitive's ``snapshot()`` only when Prometheus scrapes.

Emitted families (label ``name`` is the breaker's / limiter's name):

- ``resilience4j_circuitbreaker_state{state}`` gauge, 1 for the current state and 0
  for the others (closed, open, half_open, forced_open, disabled), as Micrometer does.
- ``resilience4j_circuitbreaker_calls_total{kind}`` counter, kind = successful, failed,
  ignored, not_permitted (our ``rejected``).
- ``resilience4j_circuitbreaker_not_permitted_calls_total{kind="not_permitted"}``
  counter: Micrometer's own name for rejected calls.
- ``resilience4j_circuitbreaker_slow_calls_total`` counter (calls slower than the
  breaker's slow-call threshold).
- ``resilience4j_circuitbreaker_failure_rate`` gauge in percent; -1 while the breaker has
  too few calls to compute one (resilience4j's convention).
- ``resilience4j_circuitbreaker_calls_seconds{kind}`` histogram (successful, failed,
  ignored), fed by :meth:`Resilience4jCollector.observe_call` from whoever times the
  calls (the breaker itself does not read the clock on its fast path).
- ``resilience4j_circuitbreaker_buffered_calls{kind}`` gauge (successful, failed: the
  outcomes in the failure-rate sliding window) and
  ``resilience4j_circuitbreaker_max_buffered_calls`` (the window's size); both 0 for a
  breaker without a sliding window.
- ``resilience4j_circuitbreaker_slow_call_rate`` gauge in percent of the breaker's
  recorded calls (lifetime; -1 before ``minimum_calls``).
- ``resilience4j_ratelimiter_available_permissions`` gauge; for a keyed limiter, the
  fewest tokens among its busiest keys (its capacity while no key is held).
- ``resilience4j_ratelimiter_waiting_threads`` gauge (the snapshot's ``waiting``, else 0).
- ``resilience4j_ratelimiter_calls_total{kind}`` counter, kind = successful (allowed) or
  failed (rejected), after resilience4j's SUCCESSFUL_ACQUIRE / FAILED_ACQUIRE events.

With ``application`` set (Micrometer's common tag, which resilience4j's Grafana dashboard
selects on), every sample also carries ``application="<name>"``.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from resilience.telemetry._histogram import HistogramSeries

__all__ = ["BREAKER_STATES", "CALL_KINDS", "Resilience4jCollector", "Snapshotting"]

logger = logging.getLogger(__name__)

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
_BREAKER_CALL_KINDS = (
    ("successful", "successful"),
    ("failed", "failed"),
    ("ignored", "ignored"),
    ("not_permitted", "rejected"),
)
#: The ``kind`` values of ``resilience4j_circuitbreaker_calls_seconds``.
CALL_KINDS = ("successful", "failed", "ignored")
#: Bucket bounds (seconds) of ``resilience4j_circuitbreaker_calls_seconds``.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


class Snapshotting(Protocol):
    """What the collector reads: anything with a ``snapshot()`` dict."""

    def snapshot(self) -> Mapping[str, Any]: ...


Supplier = Callable[[], Iterable[Snapshotting]]


def _registry_items(module: str, attribute: str) -> Iterable[Snapshotting]:
    """``module.attribute.all()``, or nothing when that module is not there (yet)."""
    try:
        registry = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return ()
    if registry is None:
        return ()
    items: Iterable[Snapshotting] = registry.all()
    return items


def _breakers() -> Iterable[Snapshotting]:
    return _registry_items("resilience.circuit_breaker", "circuit_breaker_registry")


def _limiters() -> Iterable[Snapshotting]:
    return _registry_items("resilience.rate_limiter", "rate_limiter_registry")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _text(value: object) -> str:
    # States may be str-valued Enums (CircuitState.OPEN.value == "open").
    return str(getattr(value, "value", value)).lower()


class Resilience4jCollector(Collector):
    """A prometheus_client collector publishing breakers and limiters at scrape time.

    Args:
        breakers: returns the breakers to publish; default every breaker in
            ``resilience.circuit_breaker.circuit_breaker_registry`` (none if absent).
        limiters: likewise for ``resilience.rate_limiter.rate_limiter_registry``.

        application: the ``application`` label on every sample (None: no such label).

    A ``snapshot()`` that raises or lacks keys costs only its own samples (logged).
    """

    def __init__(
        self,
        breakers: Supplier | None = None,
        limiters: Supplier | None = None,
        *,
        application: str | None = None,
    ):
        self._breakers = breakers or _breakers
        self._limiters = limiters or _limiters
        self.application = application
        self._lock = threading.Lock()
        self._call_times: dict[tuple[str, str], HistogramSeries] = {}

    def observe_call(self, name: str, kind: str, seconds: float) -> None:
        """Record one call of breaker ``name`` that took ``seconds``.

        Args:
            name: the breaker's name.
            kind: ``successful``, ``failed`` or ``ignored`` (rejected calls did not run).
            seconds: the call's duration.

        Raises:
            ValueError: an unknown ``kind`` or a NaN duration.
        """
        series = self._call_times.get((name, kind))
        if series is None:
            if kind not in CALL_KINDS:
                raise ValueError(f"kind must be one of {CALL_KINDS}, got {kind!r}")
            with self._lock:
                series = self._call_times.setdefault((name, kind), HistogramSeries(CALL_BUCKETS, 1))
        if seconds != seconds:
            raise ValueError("a call duration cannot be NaN")
        series.observe(seconds)

    def forget_calls(self) -> None:
        """Drop every recorded call duration (tests)."""
        with self._lock:
            self._call_times = {}

    def describe(self) -> Iterable[Metric]:
        # Empty: the registry must not call collect() at registration (the breaker and
        # limiter modules may not even be importable yet).
        return ()

    def collect(self) -> Iterator[Metric]:
        """Build the families from fresh snapshots; only non-empty families are yielded."""
        families = self._breaker_families() + self._limiter_families()
        families.append(self._call_family())
        if self.application is not None:
            for family in families:
                for index, sample in enumerate(family.samples):
                    labels = {**sample.labels, "application": self.application}
                    family.samples[index] = sample._replace(labels=labels)
        return (family for family in families if family.samples)

    def _call_family(self) -> Metric:
        family = HistogramMetricFamily(
            "resilience4j_circuitbreaker_calls",
            "Duration of the calls through the circuit breaker, by outcome",
            labels=["name", "kind"],
            unit="seconds",
        )
        with self._lock:
            items = sorted(self._call_times.items())
        for (name, kind), series in items:
            buckets, total = series.exposition()
            family.add_metric([name, kind], buckets, total)
        return family

    def _breaker_families(self) -> list[Metric]:
        state = GaugeMetricFamily(
            "resilience4j_circuitbreaker_state",
            "The states of the circuit breaker (1 = current)",
            labels=["name", "state"],
        )
        calls = CounterMetricFamily(
            "resilience4j_circuitbreaker_calls",
            "Calls through the circuit breaker by outcome",
            labels=["name", "kind"],
        )
        not_permitted = CounterMetricFamily(
            "resilience4j_circuitbreaker_not_permitted_calls",
            "Total number of not permitted calls",
            labels=["name", "kind"],
        )
        slow = CounterMetricFamily(
            "resilience4j_circuitbreaker_slow_calls",
            "Calls slower than the slow-call threshold",
            labels=["name"],
        )
        failure_rate = GaugeMetricFamily(
            "resilience4j_circuitbreaker_failure_rate",
            "The failure rate of the circuit breaker in percent (-1: not enough calls)",
            labels=["name"],
        )
        buffered = GaugeMetricFamily(
            "resilience4j_circuitbreaker_buffered_calls",
            "The number of buffered calls stored in the sliding window",
            labels=["name", "kind"],
        )
        max_buffered = GaugeMetricFamily(
            "resilience4j_circuitbreaker_max_buffered_calls",
            "The maximum number of buffered calls which can be stored in the sliding window",
            labels=["name"],
        )
        slow_rate = GaugeMetricFamily(
            "resilience4j_circuitbreaker_slow_call_rate",
            "The slow call rate of the circuit breaker in percent (-1: not enough calls)",
            labels=["name"],
        )
        for snap in _snapshots(self._breakers, "circuit breaker"):
            name = str(snap.get("name", ""))
            if not name:
                continue
            current = _text(snap.get("state", ""))
            for candidate in BREAKER_STATES:
                state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
            counts = snap.get("calls")
            counts = counts if isinstance(counts, Mapping) else {}
            for kind, key in _BREAKER_CALL_KINDS:
                value = _number(counts.get(key))
                if value is not None:
                    calls.add_metric([name, kind], value)
                    if kind == "not_permitted":
                        not_permitted.add_metric([name, kind], value)
            slow_calls = _number(counts.get("slow"))
            if slow_calls is not None:
                slow.add_metric([name], slow_calls)
            if "failure_rate" in snap:
                rate = _number(snap["failure_rate"])
                failure_rate.add_metric([name], -1.0 if rate is None else rate)
            window = snap.get("window")
            window = window if isinstance(window, Mapping) else {}
            in_window = _number(window.get("calls")) or 0.0
            failed_in_window = _number(window.get("failed")) or 0.0
            buffered.add_metric([name, "successful"], in_window - failed_in_window)
            buffered.add_metric([name, "failed"], failed_in_window)
            max_buffered.add_metric([name], _number(window.get("size")) or 0.0)
            slow_rate.add_metric([name], _slow_rate(counts, snap.get("config")))
        return [state, calls, not_permitted, slow, failure_rate, buffered, max_buffered, slow_rate]

    def _limiter_families(self) -> list[Metric]:
        available = GaugeMetricFamily(
            "resilience4j_ratelimiter_available_permissions",
            "The number of available permissions",
            labels=["name"],
        )
        calls = CounterMetricFamily(
            "resilience4j_ratelimiter_calls",
            "Permission requests by outcome (successful = allowed, failed = rejected)",
            labels=["name", "kind"],
        )
        waiting = GaugeMetricFamily(
            "resilience4j_ratelimiter_waiting_threads",
            "The number of waiting threads",
            labels=["name"],
        )
        for snap in _snapshots(self._limiters, "rate limiter"):
            name = str(snap.get("name", ""))
            if not name:
                continue
            tokens = _number(snap.get("available_tokens"))
            if tokens is None:
                tokens = _keyed_available(snap)
            if tokens is not None:
                available.add_metric([name], tokens)
            waiting.add_metric([name], _number(snap.get("waiting")) or 0.0)
            for kind, key in (("successful", "allowed"), ("failed", "rejected")):
                value = _number(snap.get(key))
                if value is not None:
                    calls.add_metric([name, kind], value)
        return [available, waiting, calls]


def _keyed_available(snap: Mapping[str, Any]) -> float | None:
    """A keyed limiter: the fewest tokens of its busiest keys (capacity with none held)."""
    keys = snap.get("busiest_keys")
    if not isinstance(keys, list):
        return None
    levels = [
        level
        for item in keys
        if isinstance(item, Mapping)
        and (level := _number(item.get("available_tokens"))) is not None
    ]
    return min(levels) if levels else _number(snap.get("capacity"))


def _slow_rate(counts: Mapping[str, Any], config: object) -> float:
    """Slow calls in percent of the recorded (successful + failed) calls, or -1."""
    recorded = (_number(counts.get("successful")) or 0.0) + (_number(counts.get("failed")) or 0.0)
    minimum = _number(config.get("minimum_calls")) if isinstance(config, Mapping) else None
    if recorded == 0 or recorded < (minimum or 1):
        return -1.0
    return (_number(counts.get("slow")) or 0.0) * 100.0 / recorded


def _snapshots(supplier: Supplier, what: str) -> Iterator[Mapping[str, Any]]:
    try:
        items = list(supplier())
    except Exception:
        logger.warning("listing every %s for /metrics failed", what, exc_info=True)
        return
    for item in items:
        try:
            snap = item.snapshot()
        except Exception:
            label = getattr(item, "name", item)
            logger.warning("snapshot() of %s %r failed", what, label, exc_info=True)
            continue
        if isinstance(snap, Mapping):
            yield snap
