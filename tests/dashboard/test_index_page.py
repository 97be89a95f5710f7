from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from dashboard.breakers import recorder
from resilience.circuit_breaker import CircuitBreakerConfig, circuit_breaker_registry
from resilience.rate_limiter import RateLimitConfig, rate_limiter_registry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user_client(client: Client) -> Client:
    user = User.objects.create_user("viewer", password="pw-for-tests-123")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    return client


def test_anonymous_visitor_is_sent_to_login(client: Client) -> None:
    response = client.get(reverse("index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_logged_in_user_without_view_permission_is_refused(client: Client) -> None:
    client.force_login(User.objects.create_user("nobody", password="pw-for-tests-123"))
    assert client.get(reverse("index")).status_code == 403


def test_login_page_renders(client: Client) -> None:
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content


def test_index_lists_registered_breakers_with_state_and_history(user_client: Client) -> None:
    breaker = circuit_breaker_registry.get_or_create(
        "payments", CircuitBreakerConfig(failure_threshold=1)
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    breaker.reset(actor="carol", reason="manual test")
    circuit_breaker_registry.get_or_create("search", CircuitBreakerConfig())
    assert recorder.flush()

    body = user_client.get(reverse("index")).content.decode()
    assert 'data-breaker="payments"' in body
    assert 'data-breaker="search"' in body
    assert "closed → <strong>open</strong>" in body
    assert "by carol" in body and "manual test" in body
    assert "ZeroDivisionError" in body


def test_index_lists_limiters_with_counts(user_client: Client) -> None:
    limiter = rate_limiter_registry.get_or_create(
        "api", RateLimitConfig(max_requests=2, time_window=60)
    )
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    body = user_client.get(reverse("index")).content.decode()
    row = body[body.index('data-limiter="api"') :]
    row = row[: row.index("</tr>")]
    cells = [c.split(">", 1)[1] for c in row.split("<td")[1:]]
    assert cells[0].startswith("api")
    assert cells[-2].startswith("2") and cells[-1].startswith("1")


def test_index_says_so_when_nothing_is_registered(user_client: Client) -> None:
    body = user_client.get(reverse("index")).content.decode()
    assert "No circuit breaker is registered" in body
    assert "No rate limiter is registered" in body
