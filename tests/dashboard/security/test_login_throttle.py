"""Password and token guessing is throttled per username and per client address."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard import login_throttle
from dashboard.api import testing, throttle
from resilience import telemetry
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password-123"


@pytest.fixture(autouse=True)
def _three_failures_per_minute(settings: Any, clock: FakeClock) -> None:
    settings.LOGIN_RATE_LIMIT = "3/60"
    settings.API_RATE_LIMIT = ""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    login_throttle.reset(clock=clock)
    throttle.reset()


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("ada", password=PASSWORD, is_staff=True)


def _login(url: str, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return Client().post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _throttled() -> float:
    rendered = telemetry.metrics.render_prometheus().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in rendered.splitlines()
        if line.startswith("auth_login_throttled_total")
    )


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_guessing_a_password_is_refused_with_429_and_retry_after(
    url: str, staff: User, caplog: pytest.LogCaptureFixture
) -> None:
    before = _throttled()
    for _ in range(3):
        assert _login(url, "ada", "wrong").status_code == 200  # the form, with an error
    refused = _login(url, "ada", PASSWORD)  # even the right password now
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "throttled" in caplog.text
    assert _throttled() == before + 1


def test_the_username_is_throttled_from_every_address(staff: User) -> None:
    for index in range(3):
        _login("/accounts/login/", "ada", "wrong", address=f"10.0.0.{index + 1}")
    assert _login("/accounts/login/", "ada", "wrong", address="10.9.9.9").status_code == 429


def test_the_address_is_throttled_for_every_username(staff: User) -> None:
    for name in ("a", "b", "c"):
        _login("/accounts/login/", name, "wrong")
    assert _login("/accounts/login/", "ada", PASSWORD).status_code == 429
    assert _login("/accounts/login/", "ada", PASSWORD, address="10.0.0.2").status_code == 302


def test_the_budget_refills_with_time(staff: User, clock: FakeClock) -> None:
    for _ in range(3):
        _login("/accounts/login/", "ada", "wrong")
    assert _login("/accounts/login/", "ada", PASSWORD).status_code == 429
    clock.advance(60)
    assert _login("/accounts/login/", "ada", PASSWORD).status_code == 302


def test_successful_logins_spend_nothing(staff: User) -> None:
    for _ in range(5):
        assert _login("/accounts/login/", "ada", PASSWORD).status_code == 302


def test_failed_token_authentication_is_throttled_before_the_lookup() -> None:
    client = Client()
    bad = testing.bearer("rdt_0123456789abcdef_" + "x" * 43)
    url = "/api/observability/metrics"
    for _ in range(3):
        assert client.get(url, REMOTE_ADDR="10.0.0.1", **bad).status_code == 401
    refused = client.get(url, REMOTE_ADDR="10.0.0.1", **bad)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    # A valid token from the same address is refused too while the address is blocked.
    good = testing.bearer(testing.token_for(testing.make_user("v", "dashboard.view_dashboard")))
    assert client.get(url, REMOTE_ADDR="10.0.0.1", **good).status_code == 429
    assert client.get(url, REMOTE_ADDR="10.0.0.2", **good).status_code == 200


def test_the_limiter_comes_from_the_registry_factory_so_cluster_mode_shares_it(
    clock: FakeClock,
) -> None:
    from resilience.rate_limiter import KeyedRateLimiter, rate_limiter_registry

    built: list[str] = []

    def factory(config: Any, *, name: str, **kwargs: Any) -> KeyedRateLimiter:
        built.append(name)
        return KeyedRateLimiter(config, name=name, **kwargs)

    previous = rate_limiter_registry.keyed_factory
    rate_limiter_registry.keyed_factory = factory
    try:
        login_throttle.reset(clock=clock)
        assert login_throttle.limiter() is not None
    finally:
        rate_limiter_registry.keyed_factory = None if previous is KeyedRateLimiter else previous
    assert built == [login_throttle.NAME]
