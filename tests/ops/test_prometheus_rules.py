"""The shipped alert rules pass ``promtool check rules`` and read metrics that exist."""

from __future__ import annotations

import re
import subprocess

from tests.ops.conftest import ROOT, DemoServer, tool

RULES = ROOT / "deploy/prometheus/alerts.yml"


def test_promtool_accepts_the_alert_rules() -> None:
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def test_the_rules_cover_the_built_in_alert_kinds() -> None:
    text = RULES.read_text()
    for metric in (
        "resilience4j_circuitbreaker_state",
        "resilience4j_ratelimiter_calls_total",
        "resilience_spans_dropped_total",
        "resilience_checkpoint_verification_failures_total",
    ):
        assert metric in text, metric


def test_every_metric_the_rules_read_is_on_a_live_scrape(demo_server: DemoServer) -> None:
    scrape = demo_server.scrape()
    names = set(re.findall(r"\b((?:resilience4j|resilience)_[a-z_]+)\b", RULES.read_text()))
    assert len(names) >= 5
    assert [name for name in sorted(names) if f"\n{name}" not in scrape] == []
