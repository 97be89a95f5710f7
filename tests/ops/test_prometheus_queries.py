"""A real Prometheus scrapes a live server with the demo on; every dashboard query has data.

The queries are resilience4j's published Grafana dashboard (kept verbatim in
``resilience4j_grafana_queries.json``) and this project's ``deploy/grafana`` dashboard.
Template variables are replaced by ``.*``, as Grafana's "All" does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import ROOT, DemoServer, get, tool, wait_until
from tests.services import free_port

HERE = Path(__file__).resolve().parent
RESILIENCE4J = json.loads((HERE / "resilience4j_grafana_queries.json").read_text())
SHIPPED = json.loads((ROOT / "deploy/grafana/resilience-dashboard.json").read_text())


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)


def shipped_queries() -> list[tuple[str, str]]:
    found = []
    for panel in SHIPPED["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


class Prometheus:
    def __init__(self, binary: str, target: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: resilience\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            return get(f"{self.url}/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, _, body = get(f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}")
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise AssertionError(f"{expr!r}: {reply.get('error', body[:300])}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


@pytest.fixture(scope="module")
def prometheus(demo_server: DemoServer) -> Iterator[Prometheus]:
    binary = tool("prometheus")
    directory = Path(tempfile.mkdtemp(prefix="resilience-prometheus-"))
    server = Prometheus(binary, f"127.0.0.1:{demo_server.port}", directory)
    try:
        wait_until(server.ready, 60, "prometheus ready")
        # Enough scrapes for rate()/increase() over [1m] to have several points.
        wait_until(
            lambda: server.query('count_over_time(up{job="resilience"}[1m]) >= 6'),
            60,
            "six scrapes of the demo server",
        )
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_the_target_is_up(prometheus: Prometheus) -> None:
    (up,) = prometheus.query('up{job="resilience"}')
    assert up["value"][1] == "1"


def test_every_query_of_resilience4j_grafana_dashboard_returns_series(
    prometheus: Prometheus,
) -> None:
    queries = [q for q in RESILIENCE4J["queries"] if "not_applicable" not in q]
    assert len(queries) >= 10
    empty = [
        (query["panel"], query["expr"])
        for query in queries
        if not prometheus.query(substitute(query["expr"]))
    ]
    assert empty == []


def test_micrometer_metrics_the_dashboard_does_not_chart_are_there_too(
    prometheus: Prometheus,
) -> None:
    empty = [
        expr for expr in RESILIENCE4J["micrometer_extras"] if not prometheus.query(substitute(expr))
    ]
    assert empty == []


def test_the_application_label_selects_our_series(prometheus: Prometheus) -> None:
    series = prometheus.query('resilience4j_circuitbreaker_state{application="ops-test"}')
    assert series
    assert prometheus.query('resilience4j_circuitbreaker_state{application="other"}') == []


def test_every_query_of_the_shipped_dashboard_returns_series(prometheus: Prometheus) -> None:
    queries = shipped_queries()
    assert len(queries) >= 20
    empty = [(title, expr) for title, expr in queries if not prometheus.query(substitute(expr))]
    assert empty == []


def test_http_metrics_are_labelled_by_route_not_path(prometheus: Prometheus) -> None:
    routes = {
        series["metric"]["route"]
        for series in prometheus.query("sum by (route) (http_server_requests_total)")
    }
    assert "/metrics" in routes
