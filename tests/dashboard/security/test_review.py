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


@pytest.fixture
def checkpoint_id(settings: Any, tmp_path: Any) -> Any:
    from dashboard.checkpoints import store
    from dashboard.checkpoints.store import DjangoCheckpointStore
    from resilience.checkpoint import StateCheckpointManager, set_default_checkpoint_manager

    settings.MEDIA_ROOT = tmp_path / "media"
    previous = set_default_checkpoint_manager(store.get_manager())
    manager = StateCheckpointManager(
        store=DjangoCheckpointStore(),
        signing_key=store.signing_key(),
        clock=lambda: 1_700_000_000.0,
    )
    yield manager.save_checkpoint({"card": "4111-secret"}, "a", "wf-sec", {"step": 1})
    set_default_checkpoint_manager(previous)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "suffix", "perms"),
    [
        ("get", "fork", ["checkpoints.fork_checkpoint"]),
        ("post", "fork", ["checkpoints.fork_checkpoint"]),
        ("post", "resume", ["checkpoints.resume_checkpoint", "workflows.execute_workflow"]),
    ],
)
def test_fork_and_resume_also_need_the_view_permission(
    checkpoint_id: str, method: str, suffix: str, perms: list[str]
) -> None:
    # Every mutation needs dashboard.view_dashboard on top of its own permission; the
    # fork page otherwise shows the whole state to a user who may not see the dashboard.
    from dashboard.api.testing import make_user

    client = Client()
    client.force_login(make_user("no-view", *perms))
    url = f"/checkpoints/{checkpoint_id}/{suffix}/"
    data = {"new_workflow_id": "wf-sec-copy", "reason": "x"}
    response = client.get(url) if method == "get" else client.post(url, data)
    assert response.status_code == 403
    assert b"4111-secret" not in response.content


def _masked(text: str) -> str:
    from dashboard.traces.conf import DEFAULT_MASKED_KEYS
    from dashboard.traces.masking import Masker

    return Masker(DEFAULT_MASKED_KEYS).mask_text(text)


def test_an_authorization_header_with_any_scheme_hides_its_credentials() -> None:
    masked = _masked("Authorization: Token 9f8e7d6c5b4a")
    assert "9f8e7d6c5b4a" not in masked
    assert _masked("Authorization: Bearer abcdefgh") == "Authorization: Bearer ***"


def test_a_json_document_escaped_inside_a_string_hides_its_secrets() -> None:
    # A request body logged as a JSON string inside a JSON attribute: {\"password\": \"...\"}
    masked = _masked('{\\"password\\": \\"hunter2-secret\\", \\"user\\": \\"ada\\"}')
    assert "hunter2-secret" not in masked
    assert '\\"user\\": \\"ada\\"' in masked


@pytest.mark.parametrize(
    "text",
    [
        "/accounts/login/?next=%2Fapi%2Fcall%3Fapi_key%3Dsk9secret9value",
        "/login?api%5Fkey=sk9secret9value&x=1",
        "/a?next=%252Fb%253Fpassword%253Dsk9secret9value",
    ],
)
def test_a_percent_encoded_secret_is_masked(text: str) -> None:
    assert "sk9secret9value" not in _masked(text)


@pytest.mark.parametrize("address", ["240.0.0.1", "255.255.255.255"])
def test_allowing_private_ranges_still_refuses_reserved_addresses(address: str) -> None:
    # ALERTS_WEBHOOK_ALLOW_PRIVATE lets private ranges and loopback through; reserved
    # addresses (Python also counts them as "private") stay refused, as documented.
    from dashboard.alerts.webhook_http import UnsafeWebhook, check_address

    with pytest.raises(UnsafeWebhook):
        check_address(address, allow_private=True)
