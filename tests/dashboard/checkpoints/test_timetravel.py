"""Checkpoint time travel pages: timeline, verify, state, diff, resume from here, fork."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.api.testing import make_user
from dashboard.checkpoints import store
from dashboard.checkpoints.forks import ForkError, fork_checkpoint
from dashboard.checkpoints.models import Checkpoint, CheckpointFork
from dashboard.checkpoints.store import DjangoCheckpointStore
from dashboard.models import AuditEntry
from dashboard.traces.models import SpanRecord
from dashboard.workflows import engine as engine_module
from dashboard.workflows import simulated
from dashboard.workflows.definition import STEPS
from dashboard.workflows.engine import WorkflowEngine, default_breaker_config
from dashboard.workflows.models import WorkflowRun
from dashboard.workflows.progress import RunRecorder
from dashboard.workflows.simulated import Pattern, ServiceWorld
from resilience.checkpoint import StateCheckpointManager, set_default_checkpoint_manager
from resilience.circuit_breaker import CircuitBreaker
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

VIEW = "dashboard.view_dashboard"
EXECUTE = "workflows.execute_workflow"
RESUME = "checkpoints.resume_checkpoint"
FORK = "checkpoints.fork_checkpoint"


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    yield tmp_path / "media"
    set_default_checkpoint_manager(previous)


@pytest.fixture
def world(clock: FakeClock) -> Iterator[ServiceWorld]:
    patterns = {name: Pattern(latency_ms=5.0) for name in simulated.SERVICE_NAMES}
    created = ServiceWorld(patterns, clock=clock, sleep=clock.advance, seed=2)
    for name in patterns:
        CircuitBreaker(name, default_breaker_config(), clock=clock)
    previous = engine_module.install(
        WorkflowEngine(created, progress=RunRecorder(), checkpoint_interval=3, clock=clock)
    )
    yield created
    engine_module.install(previous)


@pytest.fixture
def viewer() -> User:
    return make_user("viewer", VIEW)


@pytest.fixture
def operator() -> User:
    return make_user("operator", VIEW, EXECUTE, RESUME, FORK)


def login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def ran(workflow_id: str = "wf-1") -> list[Checkpoint]:
    """Run the workflow once; its checkpoints oldest first."""
    engine_module.engine().execute(workflow_id, caller="tests")
    return list(Checkpoint.objects.filter(workflow_id=workflow_id).order_by("checkpoint_id"))


def save_many(count: int, workflow: str = "big", agent: str = "a") -> list[str]:
    ticks = iter(range(1, count + 1))
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(),
        signing_key=store.signing_key(),
        clock=lambda: 1_700_000_000.0 + next(ticks),
    )
    return [manager.save_checkpoint({"i": i}, agent, workflow, {"step": i}) for i in range(count)]


def blob(media: Path, checkpoint_id: str) -> Path:
    return media / "checkpoints" / f"{checkpoint_id}.ckpt"


def timeline_url(workflow_id: str) -> str:
    return reverse("checkpoints:timeline", args=[workflow_id])


# -- timeline -----------------------------------------------------------------------


def test_timeline_shows_step_size_codec_and_the_run_and_trace_that_wrote_each(
    client: Client, world: ServiceWorld, viewer: User
) -> None:
    checkpoints = ran()
    run = WorkflowRun.objects.get(workflow_id="wf-1")
    assert checkpoints[0].metadata["run_id"] == run.pk  # the engine records its run
    response = login(client, viewer).get(timeline_url("wf-1"))
    assert response.status_code == 200
    html = response.content.decode()
    rows = re.findall(r'<tr data-checkpoint="(ck_[0-9a-f_]+)"', html)
    assert rows == [c.checkpoint_id for c in reversed(checkpoints)]  # newest first
    assert html.count(f"run #{run.pk}") == len(checkpoints)
    assert html.count(reverse("traces:trace", args=[run.trace_id])) == len(checkpoints)
    assert "zstd" in html and f">{len(STEPS)}</td>" in html
    oldest = login(client, viewer).get(timeline_url("wf-1") + "?order=oldest")
    oldest_rows = re.findall(r'<tr data-checkpoint="(ck_[0-9a-f_]+)"', oldest.content.decode())
    assert oldest_rows == [c.checkpoint_id for c in checkpoints]


def test_checkpoints_without_a_run_id_are_matched_to_the_run_active_at_their_time(
    client: Client, world: ServiceWorld, viewer: User
) -> None:
    checkpoints = ran()
    run = WorkflowRun.objects.get(workflow_id="wf-1")
    Checkpoint.objects.filter(workflow_id="wf-1").update(metadata={"step": 1})
    WorkflowRun.objects.filter(pk=run.pk).update(
        started_at=checkpoints[0].created_at, finished_at=checkpoints[-1].created_at
    )
    html = login(client, viewer).get(timeline_url("wf-1")).content.decode()
    assert html.count(f"run #{run.pk}") == len(checkpoints)


def test_timeline_paginates_with_a_constant_number_of_queries(
    client: Client, viewer: User, django_assert_max_num_queries: Any
) -> None:
    save_many(120)
    login(client, viewer)
    with django_assert_max_num_queries(12):
        first = client.get(timeline_url("big"))
    html = first.content.decode()
    assert html.count('<tr data-checkpoint="') == 50
    assert "page 1 of 3" in html and "120 checkpoints" in html
    last = client.get(timeline_url("big") + "?page=3").content.decode()
    assert last.count('<tr data-checkpoint="') == 20
    assert client.get(timeline_url("big") + "?page=99").status_code == 200  # last page


def test_timeline_filters_by_agent(client: Client, viewer: User) -> None:
    save_many(3, agent="planner")
    save_many(2, agent="writer")
    html = login(client, viewer).get(timeline_url("big") + "?agent=writer").content.decode()
    assert html.count('<tr data-checkpoint="') == 2
    assert "?agent=planner" in html  # the agent picker lists both


@pytest.mark.parametrize("path", ["timeline", "verify", "state", "diff"])
def test_pages_need_a_login_and_the_view_permission(client: Client, path: str) -> None:
    (checkpoint_id,) = save_many(1)
    url = {
        "timeline": timeline_url("big"),
        "verify": reverse("checkpoints:verify") + f"?ids={checkpoint_id}",
        "state": reverse("checkpoints:state", args=[checkpoint_id]),
        "diff": reverse("checkpoints:diff") + f"?a={checkpoint_id}&b={checkpoint_id}",
    }[path]
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    login(client, make_user("nobody"))
    assert client.get(url).status_code == 403


def test_verify_reports_ok_corrupted_and_missing_blobs(
    client: Client, viewer: User, media: Path
) -> None:
    good, bad, gone = save_many(3)
    data = bytearray(blob(media, bad).read_bytes())
    data[-1] ^= 1
    blob(media, bad).write_bytes(bytes(data))
    blob(media, gone).unlink()
    url = reverse("checkpoints:verify") + f"?ids={good},{bad},{gone},not-an-id"
    html = login(client, viewer).get(url).content.decode()
    pattern = r'id="v-(ck_[0-9a-f_]+)" hx-swap-oob="true".*?data-verified="(\w+)"'
    statuses = dict(re.findall(pattern, html))
    assert statuses == {good: "ok", bad: "corrupted", gone: "missing"}


# -- state --------------------------------------------------------------------------


def test_state_page_shows_a_tree_and_searches_the_state(
    client: Client, world: ServiceWorld, viewer: User
) -> None:
    last = ran()[-1]
    response = login(client, viewer).get(
        reverse("checkpoints:state", args=[last.checkpoint_id]) + "?q=budget"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert '<ul class="json-tree">' in html and 'data-path="$.results.make_plan.budget"' in html
    assert "<code>$.results.make_plan.budget</code>" in html  # a search result
    assert "dashboard/checkpoints.js" in html and "<script>" not in html  # no inline script
    assert "Resume from here" not in html and "Fork…" not in html  # viewer only


def test_state_page_of_a_corrupted_checkpoint_shows_no_content(
    client: Client, viewer: User, media: Path
) -> None:
    (checkpoint_id,) = save_many(1)
    data = bytearray(blob(media, checkpoint_id).read_bytes())
    data[-1] ^= 1
    blob(media, checkpoint_id).write_bytes(bytes(data))
    response = login(client, viewer).get(reverse("checkpoints:state", args=[checkpoint_id]))
    assert response.status_code == 409
    assert b"corrupted" in response.content and b"json-tree" not in response.content


def test_state_page_of_an_unknown_checkpoint_is_404(client: Client, viewer: User) -> None:
    login(client, viewer)
    assert client.get(reverse("checkpoints:state", args=["ck_0"])).status_code == 404
    unknown = "ck_00000000000000_000000000000"
    assert client.get(reverse("checkpoints:state", args=[unknown])).status_code == 404


# -- diff ---------------------------------------------------------------------------


def test_diff_shows_the_changed_paths_between_two_checkpoints(
    client: Client, world: ServiceWorld, viewer: User
) -> None:
    first, second, *_ = ran()
    url = reverse("checkpoints:diff") + f"?a={first.checkpoint_id}&b={second.checkpoint_id}"
    response = login(client, viewer).get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-kind="changed" data-path="$.next_step"' in html
    assert 'data-kind="added" data-path="$.results.check_budget"' in html
    assert "unchanged" in html  # unchanged subtrees folded


def test_diff_refuses_checkpoints_of_two_workflows(client: Client, viewer: User) -> None:
    (a,) = save_many(1, workflow="one")
    (b,) = save_many(1, workflow="two")
    response = login(client, viewer).get(reverse("checkpoints:diff") + f"?a={a}&b={b}")
    assert response.status_code == 400
    assert b"compare checkpoints of one workflow" in response.content


def test_diff_verifies_both_blobs_before_decoding(
    client: Client, viewer: User, media: Path
) -> None:
    a, b = save_many(2)
    data = bytearray(blob(media, b).read_bytes())
    data[-1] ^= 1
    blob(media, b).write_bytes(bytes(data))
    response = login(client, viewer).get(reverse("checkpoints:diff") + f"?a={a}&b={b}")
    assert response.status_code == 409
    assert b"corrupted" in response.content and b'id="changes"' not in response.content


# -- resume from here -----------------------------------------------------------------


def resume(client: Client, checkpoint_id: str, reason: str = "retry after the fix") -> Any:
    return client.post(reverse("checkpoints:resume", args=[checkpoint_id]), {"reason": reason})


def test_resume_re_runs_the_workflow_from_the_chosen_checkpoint_and_audits_it(
    client: Client, world: ServiceWorld, operator: User
) -> None:
    first = ran()[0]  # after step 3
    response = resume(login(client, operator), first.checkpoint_id)
    assert response.status_code == 302 and response["Location"].startswith(timeline_url("wf-1"))
    run = WorkflowRun.objects.filter(workflow_id="wf-1").order_by("-pk").first()
    assert run is not None
    assert (run.resumed_from, run.start_step, run.status, run.caller) == (
        first.checkpoint_id,
        3,
        "succeeded",
        "operator",
    )
    entry = AuditEntry.objects.get(action="workflow.resume")
    assert (entry.actor, entry.target, entry.reason, entry.source) == (
        "operator",
        "wf-1",
        "retry after the fix",
        "dashboard",
    )
    assert entry.details["checkpoint_id"] == first.checkpoint_id
    assert entry.details["run_id"] == run.pk


def test_resume_needs_a_reason(client: Client, world: ServiceWorld, operator: User) -> None:
    first = ran()[0]
    response = resume(login(client, operator), first.checkpoint_id, reason="")
    assert response.status_code == 302
    assert WorkflowRun.objects.count() == 1 and not AuditEntry.objects.exists()


def test_resume_of_a_completed_run_end_says_why_and_runs_nothing(
    client: Client, world: ServiceWorld, operator: User
) -> None:
    last = ran()[-1]
    response = resume(login(client, operator), last.checkpoint_id)
    page = client.get(response["Location"]).content.decode()
    assert "nothing is left to run" in page
    assert WorkflowRun.objects.count() == 1


def test_resume_needs_its_own_permission(client: Client, world: ServiceWorld, viewer: User) -> None:
    first = ran()[0]
    login(client, make_user("runner", VIEW, EXECUTE))
    assert resume(client, first.checkpoint_id).status_code == 403
    assert WorkflowRun.objects.count() == 1
    client.logout()
    anonymous = resume(client, first.checkpoint_id)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_resume_and_fork_need_a_csrf_token(world: ServiceWorld, operator: User) -> None:
    first = ran()[0]
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert resume(client, first.checkpoint_id).status_code == 403
    fork = client.post(
        reverse("checkpoints:fork", args=[first.checkpoint_id]), {"new_workflow_id": "wf-x"}
    )
    assert fork.status_code == 403
    assert WorkflowRun.objects.count() == 1 and not CheckpointFork.objects.exists()


# -- fork ---------------------------------------------------------------------------


def fork_url(checkpoint_id: str) -> str:
    return reverse("checkpoints:fork", args=[checkpoint_id])


def test_fork_with_an_edited_state_is_a_new_blob_with_lineage_both_ways(
    client: Client, world: ServiceWorld, operator: User, media: Path
) -> None:
    parent = ran()[1]  # after step 6
    parent_bytes = blob(media, parent.checkpoint_id).read_bytes()
    login(client, operator)
    form = client.get(fork_url(parent.checkpoint_id))
    assert form.status_code == 200
    text = form.context["form"].initial["state"]
    assert form.context["form"].initial["new_workflow_id"] == "wf-1.fork-1"
    edited = text.replace('"budget": 25', '"budget": 40')
    assert edited != text
    response = client.post(
        fork_url(parent.checkpoint_id),
        {"new_workflow_id": "wf-1-try", "state": edited, "reason": "bigger budget"},
    )
    assert response.status_code == 302 and response["Location"].startswith(timeline_url("wf-1-try"))
    fork = CheckpointFork.objects.get(workflow_id="wf-1-try")
    child = Checkpoint.objects.get(pk=fork.checkpoint_id)
    assert (fork.parent_checkpoint_id, fork.parent_workflow_id, fork.edited) == (
        parent.checkpoint_id,
        "wf-1",
        True,
    )
    assert fork.edited_paths == ["$.results.make_plan.budget"]
    assert child.sha256 != parent.sha256 and child.workflow_id == "wf-1-try"
    assert store.get_manager().verify_checkpoint(child.checkpoint_id)
    assert store.get_manager().load_checkpoint(child.checkpoint_id)["results"]["make_plan"] == {
        "tasks": ["research", "pay for data", "write"],
        "budget": 40,
    }
    assert blob(media, parent.checkpoint_id).read_bytes() == parent_bytes  # never modified
    assert child.metadata["forked_from"] == parent.checkpoint_id and "run_id" not in child.metadata
    entry = AuditEntry.objects.get(action="checkpoint.fork")
    assert (entry.target, entry.reason, entry.details["parent_checkpoint_id"]) == (
        "wf-1-try",
        "bigger budget",
        parent.checkpoint_id,
    )
    child_page = client.get(timeline_url("wf-1-try")).content.decode()
    assert "Forked from" in child_page and parent.checkpoint_id in child_page
    parent_page = client.get(timeline_url("wf-1")).content.decode()
    assert "Forks of this workflow" in parent_page and timeline_url("wf-1-try") in parent_page


def test_the_fork_runs_from_its_checkpoint_under_its_own_id(
    client: Client, world: ServiceWorld, operator: User
) -> None:
    parent = ran()[1]
    fork = fork_checkpoint(
        checkpoint_id=parent.checkpoint_id, new_workflow_id="wf-1-b", actor=operator
    )
    response = resume(login(client, operator), fork.checkpoint_id, reason="run the fork")
    assert response.status_code == 302
    run = WorkflowRun.objects.get(workflow_id="wf-1-b")
    assert (run.status, run.start_step, run.resumed_from) == ("succeeded", 6, fork.checkpoint_id)
    latest = Checkpoint.objects.filter(workflow_id="wf-1-b").order_by("-checkpoint_id").first()
    assert latest is not None
    assert store.get_manager().load_checkpoint(latest.checkpoint_id)["workflow_id"] == "wf-1-b"
    html = client.get(timeline_url("wf-1-b")).content.decode()
    assert f"run #{run.pk}" in html and "fork of" in html


def test_fork_form_names_what_is_wrong(client: Client, world: ServiceWorld, operator: User) -> None:
    parent = ran()[0]
    login(client, operator)
    bad_json = client.post(
        fork_url(parent.checkpoint_id), {"new_workflow_id": "wf-2", "state": '{"a": 1,}'}
    )
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.content.decode()
    taken = client.post(fork_url(parent.checkpoint_id), {"new_workflow_id": "wf-1", "state": ""})
    assert taken.status_code == 400 and "not its parent" in taken.content.decode()
    bad_id = client.post(fork_url(parent.checkpoint_id), {"new_workflow_id": "no spaces"})
    assert bad_id.status_code == 400 and "letters, digits" in bad_id.content.decode()
    assert not CheckpointFork.objects.exists()
    assert Checkpoint.objects.exclude(workflow_id="wf-1").count() == 0


def test_fork_into_an_existing_workflow_is_refused(world: ServiceWorld) -> None:
    parent = ran("wf-a")[0]
    ran("wf-b")
    with pytest.raises(ForkError, match="already exists"):
        fork_checkpoint(checkpoint_id=parent.checkpoint_id, new_workflow_id="wf-b")


def test_fork_needs_its_permission(client: Client, world: ServiceWorld, viewer: User) -> None:
    parent = ran()[0]
    login(client, viewer)
    assert client.get(fork_url(parent.checkpoint_id)).status_code == 403
    assert client.post(fork_url(parent.checkpoint_id), {"new_workflow_id": "x"}).status_code == 403
    client.logout()
    assert client.get(fork_url(parent.checkpoint_id)).status_code == 302
    assert not CheckpointFork.objects.exists()


# -- reachable from the admin, the simulation's runs and a trace ------------------------


def test_admin_list_and_change_pages_link_to_the_timeline(client: Client, admin_user: User) -> None:
    (checkpoint_id,) = save_many(1)
    login(client, admin_user)
    changelist = reverse("admin:checkpoints_checkpoint_changelist")
    listed = client.get(changelist + "?workflow_id__exact=big").content.decode()
    assert f'href="{timeline_url("big")}"' in listed
    assert f'href="{timeline_url("big")}?agent=a"' in listed
    change = client.get(
        reverse("admin:checkpoints_checkpoint_change", args=[quote(checkpoint_id)])
    ).content.decode()
    assert f"{timeline_url('big')}?agent=a" in change
    assert reverse("checkpoints:state", args=[checkpoint_id]) in change


def test_simulation_runs_link_to_the_timeline(
    client: Client, world: ServiceWorld, viewer: User
) -> None:
    ran()
    html = login(client, viewer).get(reverse("workflows:panel")).content.decode()
    assert f'href="{timeline_url("wf-1")}"' in html


def test_a_trace_of_workflow_execute_links_to_the_timeline(client: Client) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    SpanRecord.objects.create(
        trace_id="a" * 32,
        span_id="b" * 16,
        parent_span_id=None,
        name="workflow.execute",
        service="dashboard",
        start=now,
        end=now,
        duration_us=0,
        attributes={"workflow.id": "wf-9", "workflow.caller": "x"},
    )
    login(client, make_user("tracer", VIEW, "traces.view_spanrecord"))
    html = client.get(reverse("traces:trace", args=["a" * 32])).content.decode()
    assert f'href="{timeline_url("wf-9")}"' in html


def test_resume_spends_the_callers_execution_budget(
    client: Client, world: ServiceWorld, operator: User, settings: Any
) -> None:
    settings.WORKFLOW_EXECUTE_RATE = "1/60"
    first = ran()[0]
    login(client, operator)
    assert resume(client, first.checkpoint_id).status_code == 302
    refused = resume(client, first.checkpoint_id)
    page = client.get(refused["Location"]).content.decode()
    assert "Execution budget spent" in page
    assert WorkflowRun.objects.count() == 2  # the first run and one resume
