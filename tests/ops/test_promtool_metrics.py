"""``promtool check metrics`` on a scrape of a server under the demo load: no complaints."""

from __future__ import annotations

import subprocess

from tests.ops.conftest import DemoServer, tool


def test_promtool_finds_nothing_to_complain_about(demo_server: DemoServer) -> None:
    promtool = tool("promtool")
    scrape = demo_server.scrape()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_the_scrape_has_what_every_python_exporter_has(demo_server: DemoServer) -> None:
    scrape = demo_server.scrape()
    for family in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_gc_objects_collected_total",
        "python_info",
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "workflow_duration_seconds_bucket",
        "workflow_external_call_seconds_bucket",
        "resilience4j_circuitbreaker_calls_seconds_bucket",
    ):
        assert f"\n{family}" in scrape, family
    assert "_ms_" not in scrape and "_ms{" not in scrape
    # Bounded HTTP labels: the route pattern, not the path.
    assert 'route="/metrics"' in scrape
    assert 'application="ops-test"' in scrape


def test_static_files_are_served_by_whitenoise_hashed_and_cached(
    demo_server: DemoServer,
) -> None:
    from tests.ops.conftest import get

    status, _, page = get(f"{demo_server.url}/accounts/login/")
    assert status == 200
    hashed = [
        name for name in (demo_server.static_root / "dashboard").iterdir()
        if name.name.startswith("dashboard.") and name.suffix == ".css"
        and name.name != "dashboard.css"
    ]  # fmt: skip
    assert hashed, "collectstatic wrote no hashed dashboard.css"
    assert f"/static/dashboard/{hashed[0].name}".encode() in page
    status, headers, body = get(f"{demo_server.url}/static/dashboard/{hashed[0].name}")
    assert status == 200
    assert "immutable" in headers.get("Cache-Control", "")
    assert b"--closed" in body
