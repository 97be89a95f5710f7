"""The trace browser's tools in a real browser: find by id from the nav, the critical path,
download as OTLP JSON, upload the file to view it (span panels swap without a server)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import LiveServer, screenshot
from .test_live_browser import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def store_trace(slow_ms: int = 400) -> tuple[str, dict[str, str]]:
    """A root with a fast and a slow child (in parallel) and a sequential tail."""
    import time

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from dashboard.traces.conf import DEFAULT_MASKED_KEYS
    from dashboard.traces.masking import Masker
    from dashboard.traces.services import write_spans

    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("browser-test")
    t0 = time.time_ns() - 60_000_000_000
    ms = 1_000_000
    root = tracer.start_span("GET /basket", start_time=t0)
    inside = trace.set_span_in_context(root)
    spans = {"root": root}
    steps = (("fast", 10, 50), ("slow", 10, slow_ms), ("render", slow_ms + 20, slow_ms + 80))
    for name, start, end in steps:
        span = tracer.start_span(name, context=inside, start_time=t0 + start * ms)
        span.add_event(f"{name}.done", timestamp=t0 + end * ms)
        span.end(end_time=t0 + end * ms)
        spans[name] = span
    root.end(end_time=t0 + (slow_ms + 100) * ms)
    write_spans(memory.get_finished_spans(), masker=Masker(DEFAULT_MASKED_KEYS))
    ids = {name: f"{span.get_span_context().span_id:016x}" for name, span in spans.items()}
    return f"{root.get_span_context().trace_id:032x}", ids


def test_find_download_and_upload_a_trace(
    daphne_server: LiveServer, browser_page: Any, tmp_path: Any
) -> None:
    page = browser_page
    trace_id, ids = store_trace()
    log_in(page, daphne_server, "operator")

    page.fill("nav input[name=id]", trace_id.upper())
    page.press("nav input[name=id]", "Enter")
    page.wait_for_url(f"{daphne_server.url}/traces/{trace_id}/")
    on_path = page.eval_on_selector_all(".wf-on-path", "rows => rows.map(row => row.dataset.span)")
    assert set(on_path) == {ids["root"], ids["slow"], ids["render"]}
    screenshot(page, "trace-critical-path")

    with page.expect_download() as download_info:
        page.click("text=Download OTLP JSON")
    saved = tmp_path / "trace.json"
    download_info.value.save_as(saved)

    page.click("text=Upload a trace…")
    page.set_input_files("input[type=file]", str(saved))
    page.click("button:has-text('Show')")
    page.wait_for_selector(".uploaded-note")
    rows = page.eval_on_selector_all(
        "#waterfall [data-span]", "rows => rows.map(r => r.dataset.span)"
    )
    assert rows == [ids["root"], ids["fast"], ids["slow"], ids["render"]]
    page.click(f'[data-span="{ids["slow"]}"] a.wf-link')
    page.wait_for_selector(f'#span-panel [data-span-detail="{ids["slow"]}"]')
    assert "slow.done" in page.inner_text("#span-panel")

    page.fill("nav input[name=id]", "ab" * 16)
    page.press("nav input[name=id]", "Enter")
    page.wait_for_selector("text=Trace not found")


def test_compare_with_another_trace_from_the_trace_page(
    daphne_server: LiveServer, browser_page: Any
) -> None:
    page = browser_page
    a, _ = store_trace()
    b, _ = store_trace(slow_ms=900)
    log_in(page, daphne_server, "operator")
    page.goto(f"{daphne_server.url}/traces/{a}/")
    page.fill("input[name=with]", b)
    page.click("button:has-text('Compare')")
    page.wait_for_selector(".compare-table")
    changes = page.eval_on_selector_all(
        ".compare-table tbody tr", "rows => rows.map(r => [r.cells[0].innerText, r.dataset.change])"
    )
    assert changes == [
        ["GET /basket", "slower"],
        ["fast", "same"],
        ["slow", "slower"],
        ["render", "same"],
    ]
    screenshot(page, "trace-compare")
