"""The fleet's breakers and limiters for Prometheus, read from the database at scrape time.

Why from the database, and how a fleet primitive is exposed exactly once: every worker
already exposes nothing (it has no HTTP port; it reports to the dashboard), and the
dashboard keeps each instance's latest snapshots in ``FleetInstance`` rows. Every
server process therefore renders the *same* fleet series from the same rows, so it
does not matter which process answers a scrape. ``/metrics`` has one query parameter
to place them:

- ``/metrics`` (default): this process's own families plus the fleet families. With
  one server process (the embedded default) every fleet series appears once.
- ``/metrics?fleet=none``: this process's own families only;
  ``/metrics?fleet=only``: the fleet families only.

With several server processes that Prometheus scrapes one by one, scrape each with
``params: {fleet: [none]}`` and add one job that scrapes any one of them (the load
balancer's address) with ``params: {fleet: [only]}`` and ``honor_labels: true`` (so the
worker's ``instance`` label is kept instead of being renamed ``exported_instance``).
The README's Prometheus section shows that configuration.

Families (labels ``name``, ``instance`` = the worker's instance id, ``service``):

- ``resilience_fleet_circuitbreaker_state{state}`` gauge, one-hot like
  ``resilience4j_circuitbreaker_state``;
- ``resilience_fleet_circuitbreaker_calls_total{kind}`` counter (successful, failed,
  ignored, not_permitted);
- ``resilience_fleet_ratelimiter_calls_total{kind}`` counter (successful, failed);
- ``resilience_fleet_instance_info{host,pid,version,status}`` gauge (always 1) and
  ``resilience_fleet_instance_last_report_age_seconds`` gauge, per instance not gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from resilience.circuit_breaker import CircuitState

from . import primitives, selectors

BREAKER_STATES = tuple(state.value for state in CircuitState)
_CALL_KINDS = (
    ("successful", "successful"),
    ("failed", "failed"),
    ("ignored", "ignored"),
    ("not_permitted", "rejected"),
)
FLEET_SCOPES = ("all", "none", "only")


def _count(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


class FleetCollector(Collector):
    """Fleet primitives from ``FleetInstance`` rows, labelled with instance and service."""

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        labels = ["name", "instance", "service"]
        state = GaugeMetricFamily(
            "resilience_fleet_circuitbreaker_state",
            "The states of a fleet instance's circuit breaker (1 = current)",
            labels=[*labels, "state"],
        )
        calls = CounterMetricFamily(
            "resilience_fleet_circuitbreaker_calls",
            "Calls through a fleet instance's circuit breaker by outcome",
            labels=[*labels, "kind"],
        )
        for row in primitives.fleet_breakers(now=now):
            key = [row["name"], row["instance"], row["service"]]
            current = str(row["snapshot"].get("state", ""))
            for candidate in BREAKER_STATES:
                state.add_metric([*key, candidate], 1.0 if candidate == current else 0.0)
            counts = row["snapshot"].get("calls")
            counts = counts if isinstance(counts, dict) else {}
            for kind, field in _CALL_KINDS:
                value = _count(counts.get(field))
                if value is not None:
                    calls.add_metric([*key, kind], value)
        limiter_calls = CounterMetricFamily(
            "resilience_fleet_ratelimiter_calls",
            "Permission requests to a fleet instance's rate limiter by outcome",
            labels=[*labels, "kind"],
        )
        for row in primitives.fleet_limiters(now=now):
            key = [row["name"], row["instance"], row["service"]]
            for kind, field in (("successful", "allowed"), ("failed", "rejected")):
                value = _count(row["snapshot"].get(field))
                if value is not None:
                    limiter_calls.add_metric([*key, kind], value)
        info = GaugeMetricFamily(
            "resilience_fleet_instance_info",
            "A fleet instance (worker process) not gone; always 1",
            labels=["instance", "service", "host", "pid", "version", "status"],
        )
        age = GaugeMetricFamily(
            "resilience_fleet_instance_last_report_age_seconds",
            "Seconds since the fleet instance's last report",
            labels=["instance", "service"],
        )
        for item in selectors.instances(now=now):
            if item["status"] == selectors.GONE:
                continue
            info.add_metric(
                [
                    item["id"],
                    item["service"],
                    item["host"],
                    str(item["pid"]),
                    item["version"],
                    item["status"],
                ],
                1.0,
            )
            age.add_metric([item["id"], item["service"]], item["seconds_since_report"])
        yield from (state, calls, limiter_calls, info, age)


def render() -> bytes:
    """The fleet families in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    return generate_latest(registry)


def scope(value: str | None) -> str:
    """The ``fleet`` query parameter checked: ``all`` (default), ``none`` or ``only``.

    Raises:
        ValueError: any other value.
    """
    if value is None or value == "":
        return "all"
    if value not in FLEET_SCOPES:
        raise ValueError(f"fleet must be one of {', '.join(FLEET_SCOPES)}, got {value[:50]!r}")
    return value
