"""The breaker card in a real browser: a websocket push keeps the last failure's trace link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.live.templatetags.live import dom_id

from .conftest import LiveServer
from .test_live_browser import log_in, wait_live

pytestmark = pytest.mark.django_db(transaction=True)

BREAKER = "browser.trace-link"
TRACE_ID = "5e" * 16


def store_error_span() -> None:
    """An error span around now: the breaker's failures below fall inside it."""
    from dashboard.traces.models import SpanRecord, SpanStatus

    now = datetime.now(tz=UTC)
    SpanRecord.objects.create(
        trace_id=TRACE_ID,
        span_id="7a" * 8,
        name="GET /pay",
        service="shop",
        start=now - timedelta(seconds=5),
        end=now + timedelta(minutes=5),
        duration_us=305_000_000,
        status=SpanStatus.ERROR,
    )


def test_the_trace_link_survives_a_push(daphne_server: LiveServer, browser_page: Any) -> None:
    page = browser_page
    store_error_span()
    daphne_server.command("breaker", BREAKER, {"failure_threshold": 2, "timeout": 120})
    assert daphne_server.command("fail", BREAKER, 1) == "closed"  # a failure, no transition

    log_in(page, daphne_server, "operator")
    page.click("nav >> text=Circuit breakers")
    wait_live(page)
    state = f"#{dom_id(BREAKER)}-state"
    link = f'{state} .last-failure a[href="/traces/{TRACE_ID}/"]'
    page.wait_for_selector(f'{state}[data-state="closed"]')
    page.wait_for_selector(link)  # rendered by the page
    page.evaluate("window.__sameDocument = true")

    assert daphne_server.command("fail", BREAKER, 1) == "open"  # pushed over the socket
    page.wait_for_selector(f'{state}[data-state="open"]')
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator(link).count() == 1
