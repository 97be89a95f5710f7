"""Checkpoint time travel in a real Chromium: timeline, diff, fork with an edit, run it.

The parent workflow runs in this process (healthy fake services, a fake clock) before
the server starts; the fork runs in the server, through the page's "Resume from here".
Its screenshot of the fork's timeline (artifacts/screenshots/timeline.png) is the one
the README shows, copied to static/dashboard/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import PASSWORD, LiveServer, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

HEALTHY = {
    name: {"mode": "healthy", "latency_ms": 1.0, "jitter_ms": 0.0}
    for name in ("search-api", "llm", "payments")
}


@pytest.fixture(autouse=True)
def _time_travel_setup(settings: Any, tmp_path: Path) -> Iterator[None]:
    """Before the server forks: blobs in a temporary MEDIA_ROOT, healthy simulated."""
    from dashboard.checkpoints import store
    from dashboard.workflows import engine, simulated
    from resilience.checkpoint import set_default_checkpoint_manager

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.WORKFLOW_SERVICES = HEALTHY
    settings.WORKFLOW_EXECUTE_RATE = "100/60"
    previous_world, previous_engine = simulated.install(None), engine.install(None)
    previous_manager = set_default_checkpoint_manager(store.get_manager())
    yield
    simulated.install(previous_world)
    engine.install(previous_engine)
    set_default_checkpoint_manager(previous_manager)


@pytest.fixture
def parent_workflow(operator: str) -> str:
    """Grant the operator time travel and run wf-tour once (4 checkpoints: after steps 3, 6
    and 9, and the end-of-run save)."""
    from django.contrib.auth.models import Permission, User

    from dashboard.workflows import simulated
    from dashboard.workflows.engine import WorkflowEngine
    from dashboard.workflows.progress import RunRecorder
    from dashboard.workflows.simulated import Pattern, ServiceWorld
    from tests.clock import FakeClock

    user = User.objects.get(username=operator)
    for codename in ("execute_workflow", "resume_checkpoint", "fork_checkpoint", "view_spanrecord"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    clock = FakeClock()
    patterns = {name: Pattern(latency_ms=1.0) for name in simulated.SERVICE_NAMES}
    world = ServiceWorld(patterns, clock=clock, sleep=clock.advance, seed=2)
    WorkflowEngine(world, progress=RunRecorder(), checkpoint_interval=3, clock=clock).execute(
        "wf-tour", caller=operator
    )
    return "wf-tour"


def log_in(page: Any, server: LiveServer, username: str) -> None:
    page.goto(f"{server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")


def test_timeline_diff_fork_with_an_edit_run_the_fork_and_follow_its_lineage(
    parent_workflow: str, daphne_server: LiveServer, browser_page: Any, operator: str
) -> None:
    page, server = browser_page, daphne_server
    log_in(page, server, operator)

    # 1. the workflow's timeline: four checkpoints, each verified by the page
    page.goto(f"{server.url}/checkpoints/workflows/{parent_workflow}/?order=oldest")
    rows = page.locator("#timeline tbody tr")
    assert rows.count() == 4
    page.wait_for_selector('#timeline [data-verified="ok"]')
    page.wait_for_function("document.querySelectorAll('[data-verified=\"ok\"]').length === 4")
    ids = [rows.nth(i).get_attribute("data-checkpoint") for i in range(4)]

    # 2. diff the first two (after step 3 and after step 6)
    page.check(f'input[name=a][value="{ids[0]}"]')
    page.check(f'input[name=b][value="{ids[1]}"]')
    page.click("#compare")
    page.wait_for_selector("#changes")
    assert page.locator('tr[data-path="$.next_step"][data-kind="changed"]').count() == 1
    assert page.locator('tr[data-path="$.results.check_budget"][data-kind="added"]').count() == 1
    screenshot(page, "checkpoint-diff")

    # 3. fork the step-6 checkpoint with one edited field
    page.goto(f"{server.url}/checkpoints/{ids[1]}/")
    page.fill("#state-search", "budget")  # live filter of the state tree
    page.wait_for_selector("#state-tree li.jt-hit")
    page.click("#fork-link")
    editor = page.locator("textarea.json-editor")
    state = editor.input_value()
    assert '"budget": 25' in state
    editor.fill(state.replace('"budget": 25', '"budget": 40'))
    page.wait_for_selector("#json-status.ok")
    page.fill("input[name=new_workflow_id]", "wf-tour-fork")
    page.fill("input[name=reason]", "try a bigger budget")
    page.click("#fork-submit")
    page.wait_for_url(re.compile(r"/checkpoints/workflows/wf-tour-fork/"))
    lineage = page.locator("#lineage").inner_text()
    assert "Forked from wf-tour" in lineage and ids[1] in lineage
    assert "$.results.make_plan.budget" in lineage

    # 4. run the fork from its checkpoint (confirmation dialog, reason)
    page.click("#timeline tbody tr a[href^='/checkpoints/ck_']")
    page.on("dialog", lambda dialog: dialog.accept())
    page.fill(".resume-form input[name=reason]", "run the fork")
    page.click("#resume")
    page.wait_for_url(re.compile(r"/checkpoints/workflows/wf-tour-fork/"))
    message = page.locator(".result").inner_text()
    assert re.search(r"Run #\d+ of wf-tour-fork from step 6: Succeeded at step 12/12", message)

    # 5. the fork's run, its trace and its lineage back to the parent
    run_id = re.search(r"Run #(\d+)", message).group(1)  # type: ignore[union-attr]
    assert page.locator(f"#timeline >> text=run #{run_id}").count() >= 1
    page.wait_for_function("document.querySelectorAll('[data-verified=\"ok\"]').length >= 2")
    screenshot(page, "timeline")  # the README's static/dashboard/screenshots/timeline.png
    trace_href = page.locator("#timeline tbody tr").first.locator("a[href^='/traces/']")
    href = trace_href.get_attribute("href")
    assert href is not None
    root = page.locator('.span-stats tr[data-name="workflow.execute"]')
    for _ in range(50):  # spans are written by the server's background writer, in batches:
        response = page.goto(f"{server.url}{href}")  # the root span ends (and comes) last
        if response is not None and response.status == 200 and root.count():
            break
        page.wait_for_timeout(200)
    assert root.count() == 1
    page.click("a.workflow-timeline")
    page.wait_for_url(re.compile(r"/checkpoints/workflows/wf-tour-fork/"))
    page.click("#lineage a[href='/checkpoints/workflows/wf-tour/']")
    forks = page.locator("#lineage").inner_text()
    assert "Forks of this workflow" in forks and "wf-tour-fork" in forks
