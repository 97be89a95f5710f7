"""The shipped alert rules pass ``promtool check rules`` and read metrics that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.fleet.processes import running_fleet, wait_until
from tests.ops.conftest import ROOT, DemoServer, get, tool

RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"


def test_promtool_accepts_the_alert_rules() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests_on_sample_series() -> None:
    # alerts_test.yml: a fleet breaker open (or forced open) for 1 minute fires, labelled
    # with the worker's instance and service; 30 s open, or half open, does not.
    tested = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        capture_output=True, text=True, timeout=60, cwd=RULE_TESTS.parent,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    assert "FleetCircuitBreakerOpen" in RULE_TESTS.read_text()


def test_the_rules_cover_the_built_in_alert_kinds() -> None:
    text = RULES.read_text()
    for metric in (
        "resilience4j_circuitbreaker_state",
        "resilience4j_ratelimiter_calls_total",
        "resilience_spans_dropped_total",
        "resilience_checkpoint_verification_failures_total",
        "resilience_fleet_circuitbreaker_state",
    ):
        assert metric in text, metric


def _rule_metrics() -> set[str]:
    return set(re.findall(r"\b((?:resilience4j|resilience)_[a-z_]+)\b", RULES.read_text()))


def test_every_metric_the_rules_read_is_on_a_live_scrape(demo_server: DemoServer) -> None:
    # The fleet families have series once a worker reports: see the test below.
    scrape = demo_server.scrape()
    names = {name for name in _rule_metrics() if not name.startswith("resilience_fleet_")}
    assert len(names) >= 5
    assert [name for name in sorted(names) if f"\n{name}" not in scrape] == []


def test_a_real_workers_open_breaker_fires_the_fleet_alert(tmp_path: Path) -> None:
    """The dashboard's scraped fleet series, held for 2 minutes, fire FleetCircuitBreakerOpen
    with the worker's instance and service (promtool on the real labels, not made-up ones)."""
    with running_fleet() as fleet:
        worker = fleet.worker("orders", "payments", "inventory")
        assert worker("fail payments 2") == "open"
        assert worker("state inventory") == "closed"

        def scraped() -> list[str] | None:
            _, _, body = get(f"{fleet.server.url}/metrics?fleet=only")
            lines = [
                line.rsplit(" ", 1)
                for line in body.decode().splitlines()
                if line.startswith("resilience_fleet_circuitbreaker_state{")
            ]
            opened = [s for s, v in lines if 'state="open"' in s and float(v) == 1]
            return [f"{s} {v}" for s, v in lines] if opened else None

        series = wait_until(scraped)
    names = {name for name in _rule_metrics() if name.startswith("resilience_fleet_")}
    assert names and all(any(line.startswith(n) for line in series) for n in names)
    inputs = "\n".join(
        f"      - series: '{sample}'\n        values: '{int(float(value))}x12'"
        for sample, value in (line.rsplit(" ", 1) for line in series)
    )
    summary = f"Circuit breaker payments open on orders instance {worker.instance}"
    (tmp_path / "fleet_test.yml").write_text(f"""rule_files: [{RULES}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
{inputs}
    alert_rule_test:
      - eval_time: 2m
        alertname: FleetCircuitBreakerOpen
        exp_alerts:
          - exp_labels: {{severity: warning, name: payments, service: orders,
                          instance: "{worker.instance}"}}
            exp_annotations:
              summary: "{summary}"
              description: "Breaker payments of service orders on fleet instance \
{worker.instance} has rejected calls for at least 1 minute."
""")
    tested = subprocess.run(
        [tool("promtool"), "test", "rules", "fleet_test.yml"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
