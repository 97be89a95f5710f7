"""Metrics: the number of series per metric is capped; label order does not matter."""

from __future__ import annotations

import logging

import pytest

from resilience.telemetry import Metrics


def test_label_values_past_the_cap_fold_into_an_overflow_series(caplog) -> None:
    metrics = Metrics(resilience4j=False, max_series=3)
    caplog.set_level(logging.WARNING, logger="resilience.telemetry")
    for user in range(10):
        metrics.increment_counter("logins", labels={"user": f"u{user}", "app": "web"})
    metrics.increment_counter("logins", labels={"user": "u0", "app": "web"})  # known: counted
    counters = metrics.snapshot()["counters"]
    logins = {key: value for key, value in counters.items() if key.startswith("logins")}
    assert logins == {
        'logins{app="web",user="u0"}': 2.0,
        'logins{app="web",user="u1"}': 1.0,
        'logins{app="web",user="u2"}': 1.0,
        'logins{app="__overflow__",user="__overflow__"}': 7.0,
    }
    assert counters['metrics.series_overflow{metric="logins"}'] == 7.0
    warnings = [r for r in caplog.records if "max_series" in r.getMessage()]
    assert len(warnings) == 1  # once per metric
    page = metrics.render_prometheus().decode()
    assert 'user="u9"' not in page
    assert 'logins_total{app="__overflow__",user="__overflow__"} 7.0' in page
    # The hot-path caches stay bounded too.
    assert len(metrics._counters) <= 3 + 1


def test_histograms_and_gauges_are_capped_too() -> None:
    metrics = Metrics(resilience4j=False, max_series=2)
    for route in range(5):
        metrics.record_histogram("latency", float(route), labels={"route": f"/r{route}"})
        metrics.set_gauge("queue", float(route), labels={"queue": f"q{route}"})
    snapshot = metrics.snapshot()
    assert snapshot["histograms"]['latency{route="__overflow__"}']["count"] == 3
    assert snapshot["gauges"]['queue{queue="__overflow__"}'] == 4.0
    assert len(snapshot["histograms"]) == 3
    overflow = snapshot["counters"]
    assert overflow['metrics.series_overflow{metric="latency"}'] == 3.0
    assert overflow['metrics.series_overflow{metric="queue"}'] == 3.0


def test_the_default_cap_is_a_thousand_series() -> None:
    metrics = Metrics(resilience4j=False)
    for user in range(1005):
        metrics.increment_counter("hits", labels={"user": str(user)})
    counters = metrics.snapshot()["counters"]
    assert sum(1 for key in counters if key.startswith("hits{")) == 1001
    assert counters['metrics.series_overflow{metric="hits"}'] == 5.0


def test_the_cache_key_does_not_depend_on_label_order() -> None:
    metrics = Metrics(resilience4j=False)
    metrics.increment_counter("req", labels={"method": "GET", "code": "200"})
    metrics.increment_counter("req", labels={"code": "200", "method": "GET"})
    assert len(metrics._counters) == 1
    assert metrics.snapshot()["counters"] == {'req{code="200",method="GET"}': 2.0}


def test_max_series_is_validated() -> None:
    with pytest.raises(ValueError, match="max_series"):
        Metrics(resilience4j=False, max_series=0)
