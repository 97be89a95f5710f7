"""Defects found by an adversarial review of the issue 14 security work."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard import login_throttle
from dashboard.api import throttle
from tests.clock import FakeClock

PASSWORD = "a-long-test-password-123"


@pytest.fixture
def _three_failures_per_minute(settings: Any, clock: FakeClock) -> None:
    settings.LOGIN_RATE_LIMIT = "3/60"
    settings.API_RATE_LIMIT = ""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    login_throttle.reset(clock=clock)
    throttle.reset()


@pytest.mark.django_db
@pytest.mark.usefixtures("_three_failures_per_minute")
def test_a_compatibility_form_of_the_username_shares_its_throttle() -> None:
    # The login form NFKC-normalises the username ("ａｄａ" logs in as "ada"), so the
    # throttle must key the same way, or each spelling gets a fresh budget.
    User.objects.create_user("ada", password=PASSWORD)
    for index in range(3):
        Client().post(
            "/accounts/login/",
            {"username": "ada", "password": "wrong"},
            REMOTE_ADDR=f"10.0.0.{index + 1}",
        )
    response = Client().post(
        "/accounts/login/",
        {"username": "\uff41\uff44\uff41", "password": PASSWORD},
        REMOTE_ADDR="10.9.9.9",
    )
    assert response.status_code == 429
