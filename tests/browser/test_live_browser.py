"""Real-browser tests: Chromium (Playwright) against a live daphne server.

Screenshots land in artifacts/screenshots/ (the README shows them).
"""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.live.templatetags.live import dom_id

from .conftest import PASSWORD, LiveServer, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

BREAKER = "browser.payments"


def log_in(page: Any, server: LiveServer, username: str) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")


def revoke(username: str, codename: str) -> None:
    from django.contrib.auth.models import Permission, User

    user = User.objects.get(username=username)
    user.user_permissions.remove(Permission.objects.get(codename=codename))


def wait_live(page: Any) -> None:
    page.wait_for_selector('#live-status[data-status="live"]')


def test_operator_watches_a_breaker_open_then_resets_it(
    daphne_server: LiveServer, browser_page: Any
) -> None:
    page = browser_page
    daphne_server.command("breaker", BREAKER, {"failure_threshold": 3, "timeout": 120})
    log_in(page, daphne_server, "operator")
    wait_live(page)
    screenshot(page, "overview")

    page.click("nav >> text=Circuit breakers")
    wait_live(page)
    card = f"#{dom_id(BREAKER)}"
    state = f"{card}-state"
    page.wait_for_selector(f'{state}[data-state="closed"]')
    page.evaluate("window.__sameDocument = true")

    # The breaker trips inside the server process; the card must follow without a reload.
    assert daphne_server.command("fail", BREAKER, 3) == "open"
    page.wait_for_selector(f'{state}[data-state="open"]')  # latency: bench/bench_live.py
    assert page.evaluate("window.__sameDocument") is True
    assert page.inner_text(f"{state} .badge") == "OPEN"
    assert "BadFailure" in page.inner_text(state)
    assert "Half-open in" in page.inner_text(state)
    page.wait_for_selector(f"{card}-history >> text=closed → open")
    screenshot(page, "breaker-open")

    # Reset: a reason prompt and a confirmation, both answered.
    dialogs: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append(dialog.type)
        if dialog.type == "prompt":
            dialog.accept("upstream fixed, verified by hand")
        else:
            dialog.accept()

    page.on("dialog", answer)
    page.click(f'{card} button[data-action="reset"]')
    page.wait_for_selector(f'{card}-result [data-result="ok"]')
    assert sorted(dialogs) == ["confirm", "prompt"]
    assert "Reset by operator" in page.inner_text(f"{card}-result")
    page.wait_for_selector(f'{state}[data-state="closed"]')
    row = page.locator(f"{card}-history li.manual").first
    row.wait_for()
    assert "by operator" in row.inner_text()
    assert "upstream fixed, verified by hand" in row.inner_text()
    screenshot(page, "breaker-reset")

    # Permission withdrawn while the page is open: the refusal shows in the card.
    revoke("operator", "operate_breaker")
    page.click(f'{card} button[data-action="force_open"]')
    page.wait_for_selector(f'{card}-result [data-result="error"]')
    assert "do not have permission to force open" in page.inner_text(f"{card}-result")
    assert page.get_attribute(state, "data-state") == "closed"


def test_metric_chart_advances_every_second(daphne_server: LiveServer, browser_page: Any) -> None:
    page = browser_page
    log_in(page, daphne_server, "operator")
    page.click("nav >> text=Metrics")
    wait_live(page)
    chart = 'figure[data-chart-id="counter:browser.requests"]'
    page.wait_for_selector(f"{chart} canvas")
    first = page.get_attribute(chart, "data-last-t") or ""
    # A selector, not wait_for_function: the page's CSP forbids the eval that needs.
    page.wait_for_selector(f'{chart}:not([data-last-t="{first}"])', timeout=3_000)
    assert float(page.get_attribute(chart, "data-last-t") or 0) > float(first or 0)
    page.wait_for_selector('figure[data-chart-id="histogram:browser.latency_ms"] canvas')
    screenshot(page, "metrics")


def test_page_says_disconnected_and_reconnects_after_a_restart(
    daphne_server: LiveServer, browser_page: Any
) -> None:
    page = browser_page
    log_in(page, daphne_server, "operator")
    page.click("nav >> text=Rate limiters")
    wait_live(page)
    daphne_server.stop()
    page.wait_for_selector('#live-status[data-status="disconnected"]', timeout=5_000)
    assert "disconnected" in page.inner_text("#live-status")
    screenshot(page, "disconnected")
    daphne_server.start()
    page.wait_for_selector('#live-status[data-status="live"]', timeout=15_000)


def test_logging_out_in_another_tab_shows_logged_out(
    daphne_server: LiveServer, browser_page: Any
) -> None:
    page = browser_page
    log_in(page, daphne_server, "operator")
    page.click("nav >> text=Rate limiters")
    wait_live(page)
    other = page.context.new_page()  # same cookies: the same session
    other.goto(f"{daphne_server.url}/")
    other.click("button:has-text('Log out')")
    other.wait_for_url(f"{daphne_server.url}/accounts/login/")
    page.wait_for_selector('#live-status[data-status="logged-out"]', timeout=5_000)
    assert "logged out" in page.inner_text("#live-status")
