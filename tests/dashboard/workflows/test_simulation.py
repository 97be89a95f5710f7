"""The Simulation page: who may see it, who may break a service, and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.api.testing import make_user
from dashboard.models import AuditEntry
from dashboard.workflows import simulated
from dashboard.workflows.actions import change_service_pattern
from dashboard.workflows.models import ServicePattern
from dashboard.workflows.simulated import Pattern, ServiceWorld
from tests.dashboard.conftest import FakeClock

pytestmark = [
    pytest.mark.django_db(transaction=True),
]

VIEW = "dashboard.view_dashboard"
OPERATE = "workflows.operate_simulation"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def world(clock: FakeClock) -> Iterator[ServiceWorld]:
    created = ServiceWorld(
        {name: Pattern(latency_ms=50.0) for name in simulated.SERVICE_NAMES},
        clock=clock,
        sleep=clock.advance,
    )
    previous = simulated.install(created)
    yield created
    simulated.install(previous)


@pytest.fixture
def operator() -> User:
    return make_user("olga", VIEW, OPERATE)


@pytest.fixture
def viewer() -> User:
    return make_user("vic", VIEW)


def _client(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_the_page_needs_login_and_the_view_permission() -> None:
    anonymous = Client().get("/simulation/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    nobody = _client(make_user("nobody"))
    assert nobody.get("/simulation/").status_code == 403
    assert nobody.get("/simulation/panel/").status_code == 403


def test_the_page_lists_services_their_patterns_and_recent_runs(viewer: User) -> None:
    response = _client(viewer).get("/simulation/")
    assert response.status_code == 200
    html = response.content.decode()
    for name in simulated.SERVICE_NAMES:
        assert f'data-service="{name}"' in html
    assert "No workflow has run yet." in html
    assert "operate simulation" in html  # a viewer is told why there is no form
    assert 'name="pattern"' not in html


def test_an_operator_sees_the_form(operator: User) -> None:
    html = _client(operator).get("/simulation/").content.decode()
    assert 'name="pattern"' in html and 'hx-post="/simulation/pattern/"' in html


def test_an_operator_breaks_a_service_with_htmx_and_it_is_audited(
    operator: User, world: ServiceWorld
) -> None:
    response = _client(operator).post(
        "/simulation/pattern/",
        {"service": "payments", "pattern": "down-30s", "reason": "  game day  "},
        **HTMX,
    )
    assert response.status_code == 200
    assert "payments is now down for 30 s." in response.content.decode()
    assert response["HX-Trigger"] == "simulation-changed"
    assert world.pattern("payments") == Pattern(mode="down", latency_ms=50.0, down_for_s=30.0)
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.target, entry.source, entry.reason) == (
        operator,
        "simulation.set_pattern",
        "payments",
        "dashboard",
        "game day",
    )
    assert entry.details == {
        "choice": "down-30s",
        "from": "healthy (50 ms)",
        "to": "down for 30 s",
        "version": 1,
    }
    # Stored for the workers, who apply it to their own services.
    stored = ServicePattern.objects.get()
    assert (stored.service, stored.choice, stored.version, stored.changed_by) == (
        "payments",
        "down-30s",
        1,
        "olga",
    )


def test_default_restores_the_configured_pattern(operator: User, world: ServiceWorld) -> None:
    world.set_pattern("llm", Pattern(mode="slow"))
    client = _client(operator)
    response = client.post("/simulation/pattern/", {"service": "llm", "pattern": "default"})
    assert response.status_code == 302  # without htmx: back to the page
    assert world.pattern("llm") == Pattern(latency_ms=50.0)
    page = client.get(response["Location"]).content.decode()
    assert "llm is now healthy (50 ms)." in page


def test_a_viewer_may_not_change_a_pattern(viewer: User, world: ServiceWorld) -> None:
    response = _client(viewer).post(
        "/simulation/pattern/", {"service": "payments", "pattern": "down"}, **HTMX
    )
    assert response.status_code == 403
    assert world.pattern("payments").mode == "healthy"
    assert not AuditEntry.objects.exists()


def test_changing_a_pattern_needs_the_csrf_token(operator: User, world: ServiceWorld) -> None:
    client = _client(operator, csrf=True)
    refused = client.post("/simulation/pattern/", {"service": "payments", "pattern": "down"})
    assert refused.status_code == 403
    assert world.pattern("payments").mode == "healthy"
    client.cookies["csrftoken"] = "c" * 32
    accepted = client.post(
        "/simulation/pattern/",
        {"service": "payments", "pattern": "down"},
        HTTP_X_CSRFTOKEN="c" * 32,
        **HTMX,
    )
    assert accepted.status_code == 200
    assert world.pattern("payments").mode == "down"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"service": "ghost", "pattern": "down"}, "service: Select a valid choice"),
        ({"service": "llm", "pattern": "explode"}, "pattern: Select a valid choice"),
        ({"service": "llm", "pattern": "down", "reason": "r" * 501}, "reason: Ensure"),
    ],
)
def test_bad_input_is_a_400_with_a_message_and_changes_nothing(
    operator: User, world: ServiceWorld, data: dict[str, str], message: str
) -> None:
    response = _client(operator).post("/simulation/pattern/", data, **HTMX)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert world.pattern("llm").mode == "healthy"
    assert not AuditEntry.objects.exists()


def test_the_action_refuses_unknown_services_without_auditing(world: ServiceWorld) -> None:
    with pytest.raises(ValueError, match="service must be one of"):
        change_service_pattern(name="ghost", choice="down", user=None)
    with pytest.raises(ValueError, match="pattern must be one of"):
        change_service_pattern(name="llm", choice="sideways", user=None)
    assert not AuditEntry.objects.exists()


def test_the_panel_shows_a_down_service_and_its_breaker(viewer: User, world: ServiceWorld) -> None:
    from resilience.circuit_breaker import circuit_breaker_registry

    circuit_breaker_registry.get_or_create("payments").force_open()
    world.set_pattern("payments", Pattern(mode="down"))
    html = _client(viewer).get("/simulation/panel/").content.decode()
    row = html[html.index('data-service="payments"') :]
    row = row[: row.index("</tr>")]
    assert "DOWN" in row and 'data-breaker-state="forced_open"' in row


def test_runs_are_readable_but_not_editable_in_the_admin() -> None:
    from django.utils import timezone

    from dashboard.workflows.models import WorkflowRun

    now = timezone.now()
    run = WorkflowRun.objects.create(workflow_id="w-9", started_at=now, updated_at=now)
    admin_user = User.objects.create_superuser("root", password="pw-for-tests-123")
    client = _client(admin_user)
    listing = client.get("/admin/workflows/workflowrun/")
    assert listing.status_code == 200 and "w-9" in listing.content.decode()
    assert client.get("/admin/workflows/workflowrun/add/").status_code == 403
    change = client.post(f"/admin/workflows/workflowrun/{run.pk}/change/", {"status": "failed"})
    assert change.status_code == 403
    run.refresh_from_db()
    assert run.status == "running"


def test_the_overview_lets_operators_break_a_service(operator: User, viewer: User) -> None:
    watcher = _client(viewer).get("/").content.decode()
    assert 'hx-post="/simulation/pattern/"' not in watcher and "operate simulation" in watcher
    page = _client(operator).get("/").content.decode()
    assert 'hx-post="/simulation/pattern/"' in page
    response = _client(operator).post(
        "/simulation/pattern/",
        {"service": "payments", "pattern": "down", "reason": "from the overview"},
        **HTMX,
    )
    assert response.status_code == 200
    [payments] = [row for row in simulated.world().snapshot() if row["name"] == "payments"]
    assert payments["down_now"] and payments["pattern"]["mode"] == "down"
    assert AuditEntry.objects.get(action="simulation.set_pattern").reason == "from the overview"
