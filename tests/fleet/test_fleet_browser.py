"""A breaker that exists only in a worker process, seen and reset in a real browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fleet.processes import PASSWORD, ROOT, Fleet, wait_until

SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def test_reset_clicked_on_the_fleet_page_closes_the_breaker_in_the_worker(
    fleet: Fleet, browser_page: Any
) -> None:
    page = browser_page
    worker = fleet.worker("billing", "ledger")
    other = fleet.worker("billing", "ledger")
    assert worker("fail ledger 2") == "open"

    page.goto(f"{fleet.server.url}/accounts/login/")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{fleet.server.url}/")
    page.click("nav >> text=Fleet")
    group = page.locator('[data-fleet-breaker="ledger"]')
    group.locator("[data-group-state]", has_text="open").wait_for()
    rows = group.locator("tbody tr")
    wait_until(lambda: rows.count() == 2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(SCREENSHOTS / "fleet-open.png")), full_page=True)
    # The overview sees the worker's breaker too, naming the instance it is open on.
    page.goto(f"{fleet.server.url}/")
    chip = page.locator('[data-fleet-chip="ledger"][data-state="open"]')
    chip.wait_for()
    assert "open on billing@" in chip.inner_text()
    page.click("nav >> text=Fleet")
    group = page.locator('[data-fleet-breaker="ledger"]')
    group.locator("[data-group-state]", has_text="open").wait_for()

    dialogs: list[str] = []

    def answer(dialog: Any) -> None:  # hx-prompt for the reason, and hx-confirm
        dialogs.append(dialog.type)
        dialog.accept("ledger service is back" if dialog.type == "prompt" else None)

    page.on("dialog", answer)
    group.locator("button", has_text="Reset").click()
    page.locator("#fleet-result", has_text="Sent to 2 instances").wait_for()
    assert sorted(dialogs) == ["confirm", "prompt"]
    wait_until(lambda: worker("state ledger") == "closed")
    assert other("state ledger") == "closed"
    group = page.locator('[data-fleet-breaker="ledger"]')
    group.locator("[data-group-state]", has_text="closed").wait_for()
    applied = group.locator('[data-command-status="applied"]')
    wait_until(lambda: applied.count() == 2)
    page.screenshot(path=str(Path(SCREENSHOTS / "fleet-reset.png")), full_page=True)
    page.click("text=Instances")
    page.locator('tr[data-status="live"]', has_text="billing").first.wait_for()
