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
- ``resilience4j_ratelimiter_available_permissions`` gauge (absent for keyed limiters).
- ``resilience4j_ratelimiter_calls_total{kind}`` counter, kind = successful (allowed) or
  failed (rejected), after resilience4j's SUCCESSFUL_ACQUIRE / FAILED_ACQUIRE events.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["BREAKER_STATES", "Resilience4jCollector", "Snapshotting"]

logger = logging.getLogger(__name__)

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
_BREAKER_CALL_KINDS = (
    ("successful", "successful"),
    ("failed", "failed"),
    ("ignored", "ignored"),
    ("not_permitted", "rejected"),
)


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

    A ``snapshot()`` that raises or lacks keys costs only its own samples (logged).
    """

    def __init__(self, breakers: Supplier | None = None, limiters: Supplier | None = None):
        self._breakers = breakers or _breakers
        self._limiters = limiters or _limiters

    def describe(self) -> Iterable[Metric]:
        # Empty: the registry must not call collect() at registration (the breaker and
        # limiter modules may not even be importable yet).
        return ()

    def collect(self) -> Iterator[Metric]:
        """Build the families from fresh snapshots; only non-empty families are yielded."""
        families = self._breaker_families() + self._limiter_families()
        return (family for family in families if family.samples)

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
        return [state, calls, not_permitted, slow, failure_rate]

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
        for snap in _snapshots(self._limiters, "rate limiter"):
            name = str(snap.get("name", ""))
            if not name:
                continue
            tokens = _number(snap.get("available_tokens"))
            if tokens is not None:
                available.add_metric([name], tokens)
            for kind, key in (("successful", "allowed"), ("failed", "rejected")):
                value = _number(snap.get(key))
                if value is not None:
                    calls.add_metric([name, kind], value)
        return [available, calls]


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
