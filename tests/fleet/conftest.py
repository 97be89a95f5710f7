"""Fixtures of the fleet tests: a running fleet (``processes.py``) and a real browser."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.processes import CHROMIUM, CHROMIUM_ARGS, Fleet, running_fleet


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with running_fleet() as fleet:
        yield fleet


@pytest.fixture
def browser_page(fleet: Fleet) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing and CI=true: the fleet browser test must run")
        pytest.skip("chromium is missing (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()
