from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from dashboard.breakers.models import BreakerEvent
from dashboard.live.templatetags.live import dom_id
from dashboard.models import AuditEntry
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry
from resilience.rate_limiter import RateLimitConfig, rate_limiter_registry

pytestmark = pytest.mark.django_db(transaction=True)


def login(client: Client, username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw-for-tests-123")
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return user


def act(client: Client, name: str, action: str, reason: str | None = "on call"):  # type: ignore[no-untyped-def]
    headers = {"HX-Request": "true"}
    if reason is not None:
        headers["HX-Prompt"] = reason
    return client.post(reverse("live:breaker-action", args=[name, action]), headers=headers)


@pytest.mark.parametrize("page", ["live:breakers", "live:limiters", "live:metrics"])
def test_live_pages_need_login_and_view_permission(client: Client, page: str) -> None:
    response = client.get(reverse(page))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    login(client, "nobody")
    assert client.get(reverse(page)).status_code == 403


@pytest.mark.parametrize(
    ("page", "socket"),
    [
        ("index", "/ws/live/overview/"),
        ("live:breakers", "/ws/live/breakers/"),
        ("live:limiters", "/ws/live/limiters/"),
        ("live:metrics", "/ws/live/metrics/"),
    ],
)
def test_each_page_has_the_navigation_and_its_socket(
    client: Client, page: str, socket: str
) -> None:
    login(client, "viewer", "view_dashboard")
    body = client.get(reverse(page)).content.decode()
    assert f'ws-connect="{socket}"' in body and 'hx-ext="ws"' in body
    assert "ext/hx-ws-2" in body and 'id="live-status"' in body
    for target in ("live:breakers", "live:limiters", "live:metrics", "traces:search"):
        assert f'href="{reverse(target)}"' in body
    assert ">Checkpoints</a>" in body


def test_breaker_card_shows_trials_countdown_and_last_failure(client: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create(
        "payments", CircuitBreakerConfig(failure_threshold=1, timeout=30, half_open_max_calls=2)
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    login(client, "viewer", "view_dashboard")
    body = client.get(reverse("live:breakers")).content.decode()
    assert f'id="{dom_id("payments")}"' in body
    assert 'data-state="open"' in body and "0 / 2 in flight" in body
    assert 'data-countdown="' in body
    assert "ZeroDivisionError" in body


def test_buttons_follow_the_users_permissions(client: Client) -> None:
    circuit_breaker_registry.get_or_create("payments", CircuitBreakerConfig())
    login(client, "viewer", "view_dashboard")
    assert "hx-post" not in client.get(reverse("live:breakers")).content.decode()
    client.logout()
    login(client, "resetter", "view_dashboard", "reset_breaker")
    body = client.get(reverse("live:breakers")).content.decode()
    assert 'data-action="reset"' in body and 'data-action="force_open"' not in body
    assert "hx-confirm=" in body and "hx-prompt=" in body
    client.logout()
    login(client, "operator", "view_dashboard", "reset_breaker", "operate_breaker")
    body = client.get(reverse("live:breakers")).content.decode()
    assert 'data-action="force_open"' in body and 'data-action="disable"' in body


def test_reset_with_a_reason_closes_the_breaker_and_records_who_and_why(client: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create(
        "payments", CircuitBreakerConfig(failure_threshold=1)
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    login(client, "alice", "view_dashboard", "reset_breaker")
    response = act(client, "payments", "reset", "upstream fixed")
    body = response.content.decode()
    assert response.status_code == 200
    assert breaker.state.value == "closed"
    assert "Reset by alice: “upstream fixed”. Now CLOSED." in body
    # The card's state and history are swapped out-of-band by the same response.
    assert f'id="{dom_id("payments")}-state"' in body and 'data-state="closed"' in body
    assert "(by alice: “upstream fixed”)" in body
    assert BreakerEvent.objects.filter(breaker="payments", actor="alice").exists()
    assert AuditEntry.objects.get(action="breaker.reset").reason == "upstream fixed"


def test_action_without_permission_is_refused_with_a_message(client: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create("payments", CircuitBreakerConfig())
    login(client, "viewer", "view_dashboard", "reset_breaker")
    response = act(client, "payments", "force_open")
    assert response.status_code == 403
    assert "You do not have permission to force open circuit breakers." in response.content.decode()
    assert breaker.state.value == "closed"
    assert not AuditEntry.objects.exists()


def test_action_without_a_reason_is_refused_with_a_message(client: Client) -> None:
    circuit_breaker_registry.get_or_create("payments", CircuitBreakerConfig())
    login(client, "alice", "view_dashboard", "reset_breaker")
    for reason in (None, "   "):
        response = act(client, "payments", "reset", reason)
        assert response.status_code == 400
        assert "Give a reason to reset" in response.content.decode()


def test_action_on_unknown_breaker_or_action_says_so(client: Client) -> None:
    login(client, "alice", "view_dashboard", "reset_breaker")
    response = act(client, "ghost", "reset")
    assert response.status_code == 404
    assert "No circuit breaker named “ghost”" in response.content.decode()
    assert act(client, "ghost", "explode").status_code == 404


def test_action_needs_post_and_a_session(client: Client) -> None:
    circuit_breaker_registry.get_or_create("payments", CircuitBreakerConfig())
    response = act(client, "payments", "reset")
    assert response.status_code == 403 and "log in again" in response.content.decode()
    login(client, "alice", "view_dashboard", "reset_breaker")
    assert client.get(reverse("live:breaker-action", args=["payments", "reset"])).status_code == 405


def test_action_needs_the_csrf_token(client: Client) -> None:
    circuit_breaker_registry.get_or_create("payments", CircuitBreakerConfig())
    csrf_client = Client(enforce_csrf_checks=True)
    login(csrf_client, "alice", "view_dashboard", "reset_breaker")
    assert act(csrf_client, "payments", "reset").status_code == 403
    page = csrf_client.get(reverse("live:breakers")).content.decode()
    token = page.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    response = csrf_client.post(
        reverse("live:breaker-action", args=["payments", "reset"]),
        headers={"HX-Request": "true", "HX-Prompt": "ok", "X-CSRFToken": token},
    )
    assert response.status_code == 200


def test_breaker_names_with_slashes_and_quotes_round_trip(client: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create('svc/a "b"', CircuitBreakerConfig())
    breaker.force_open()
    login(client, "alice", "view_dashboard", "reset_breaker")
    body = client.get(reverse("live:breakers")).content.decode()
    assert 'data-breaker="svc/a &quot;b&quot;"' in body
    assert act(client, 'svc/a "b"', "reset").status_code == 200
    assert breaker.state.value == "closed"


def test_limiters_page_lists_rate_capacity_tokens_and_busiest_keys(client: Client) -> None:
    limiter = rate_limiter_registry.get_or_create(
        "api", RateLimitConfig(max_requests=2, time_window=60)
    )
    assert limiter.try_acquire()
    login(client, "viewer", "view_dashboard")
    body = client.get(reverse("live:limiters")).content.decode()
    row = body[body.index('data-limiter="api"') :]
    row = row[: row.index("</tr>")]
    cells = [c.split(">", 1)[1].split("<", 1)[0].strip() for c in row.split("<td")[1:]]
    assert cells[0] == "api" and cells[3] == "2"
    assert cells[-2:] == ["1", "0"]


def test_metrics_page_renders_the_sample_history_for_the_charts(client: Client) -> None:
    login(client, "viewer", "view_dashboard")
    body = client.get(reverse("live:metrics")).content.decode()
    assert 'id="live-history"' in body and "data-charts" in body
    assert "vendor/uplot/uPlot.iife.min.js" in body
