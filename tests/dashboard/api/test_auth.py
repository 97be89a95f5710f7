"""API authentication: tokens (lifecycle, admin, command), sessions with CSRF, 401 vs 403."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from dashboard.api import testing, throttle
from dashboard.api.models import ApiToken
from dashboard.api.tokens import TOKEN_PATTERN, hash_secret, parse_expiry
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db

URL = "/api/observability/metrics"
RESET = "/api/observability/metrics/reset"


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    throttle.reset()
    yield
    throttle.reset()


@pytest.fixture
def viewer() -> User:
    return testing.make_user("vera", "dashboard.view_dashboard")


def test_anonymous_request_is_401_with_a_bearer_challenge(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "authentication required" in response.json()["detail"]


def test_valid_token_reads(client: Client, viewer: User) -> None:
    response = client.get(URL, **testing.bearer(testing.token_for(viewer)))
    assert response.status_code == 200
    assert set(response.json()) == {"counters", "gauges", "histograms"}


def test_token_of_a_user_without_the_view_permission_is_403(client: Client) -> None:
    nobody = testing.make_user("nobody")
    response = client.get(URL, **testing.bearer(testing.token_for(nobody)))
    assert response.status_code == 403
    assert "dashboard.view_dashboard" in response.json()["detail"]


def test_token_is_stored_hashed_never_in_clear(viewer: User) -> None:
    plaintext = testing.token_for(viewer)
    match = TOKEN_PATTERN.fullmatch(plaintext)
    assert match is not None
    token = ApiToken.objects.get()
    assert token.prefix == match[1]
    assert token.secret_hash == hash_secret(match[2])
    stored = [str(value) for value in ApiToken.objects.values_list().get()]
    assert not any(match[2] in value for value in stored)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="wrong-secret"),
        pytest.param(lambda t: t.replace(t[4:20], "0" * 16), id="unknown-prefix"),
        pytest.param(lambda t: "not-a-token", id="malformed"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_bad_tokens_are_401(client: Client, viewer: User, mangle: object) -> None:
    token = testing.token_for(viewer)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {mangle(token)}")
    assert response.status_code == 401


def test_expired_token_is_401(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer, expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(URL, **testing.bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_token_works_until_it_expires(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer, expires_at=timezone.now() + timedelta(hours=1))
    assert client.get(URL, **testing.bearer(token)).status_code == 200


def test_revoked_token_is_401_and_revocation_is_audited(client: Client, viewer: User) -> None:
    from dashboard.api.tokens import revoke_token

    token = testing.token_for(viewer)
    assert client.get(URL, **testing.bearer(token)).status_code == 200
    revoke_token(token=ApiToken.objects.get(), actor=None, source="command")
    assert client.get(URL, **testing.bearer(token)).status_code == 401
    assert AuditEntry.objects.filter(action="api_token.revoke").count() == 1


def test_token_of_an_inactive_user_is_401(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    viewer.is_active = False
    viewer.save()
    assert client.get(URL, **testing.bearer(token)).status_code == 401


def test_use_records_last_used_at(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert ApiToken.objects.get().last_used_at is None
    client.get(URL, **testing.bearer(token))
    assert ApiToken.objects.get().last_used_at is not None


def test_token_mutation_needs_no_csrf(viewer: User) -> None:
    admin = testing.make_user("ada", "dashboard.view_dashboard", "dashboard.reset_metrics")
    client = Client(enforce_csrf_checks=True)
    response = client.post(RESET, **testing.bearer(testing.token_for(admin)))
    assert response.status_code == 200


# ---- sessions --------------------------------------------------------------------------


def test_logged_in_session_reads_without_csrf(viewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    assert client.get(URL).status_code == 200


def test_session_without_the_view_permission_is_403() -> None:
    client = Client()
    client.force_login(testing.make_user("nobody"))
    assert client.get(URL).status_code == 403


def test_session_post_without_csrf_token_is_refused() -> None:
    user = testing.make_user("ada", "dashboard.view_dashboard", "dashboard.reset_metrics")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(RESET, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not AuditEntry.objects.filter(action="metrics.reset").exists()


def test_session_post_with_csrf_token_succeeds() -> None:
    user = testing.make_user("ada", "dashboard.view_dashboard", "dashboard.reset_metrics")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/accounts/login/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(RESET, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200


def test_anonymous_post_is_401_not_a_csrf_error() -> None:
    response = Client(enforce_csrf_checks=True).post(RESET)
    assert response.status_code == 401


# ---- creating tokens -------------------------------------------------------------------


def test_command_prints_a_working_token_once(client: Client, viewer: User) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_token", "vera", "--name", "grafana", "--expires", "30d", stdout=out, stderr=err
    )
    plaintext = out.getvalue().strip()
    assert TOKEN_PATTERN.fullmatch(plaintext)
    token = ApiToken.objects.get()
    assert token.name == "grafana" and token.user == viewer
    assert token.expires_at is not None
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert "not shown again" in err.getvalue()
    assert client.get(URL, **testing.bearer(plaintext)).status_code == 200
    assert AuditEntry.objects.filter(action="api_token.create", source="command").exists()


def test_command_refuses_unknown_user_and_bad_expiry(viewer: User) -> None:
    with pytest.raises(CommandError, match="no user named"):
        call_command("create_api_token", "ghost", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="expires must look like"):
        call_command("create_api_token", "vera", "--expires", "soon", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)],
)
def test_parse_expiry_units(text: str, seconds: int) -> None:
    assert parse_expiry(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0d", "-1d", "1y", "", "d", "9999999d"])
def test_parse_expiry_rejects_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="expires must look like"):
        parse_expiry(text)


def test_admin_creates_a_token_and_shows_it_once(client: Client, viewer: User) -> None:
    admin = User.objects.create_superuser("root", password=None)
    client.force_login(admin)
    response = client.post(
        "/admin/api/apitoken/add/",
        {"user": viewer.pk, "name": "ci", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = re.findall(r"rdt_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", response.content.decode())
    assert len(set(shown)) == 1
    token = ApiToken.objects.get()
    assert token.user == viewer and token.name == "ci"
    assert token.secret_hash == hash_secret(shown[0].split("_", 2)[2])
    # Not on the change page afterwards.
    page = client.get(f"/admin/api/apitoken/{token.pk}/change/").content.decode()
    assert shown[0] not in page and token.prefix in page
    client.logout()
    assert client.get(URL, **testing.bearer(shown[0])).status_code == 200


def test_admin_revoke_action_revokes_and_audits(client: Client, viewer: User) -> None:
    plaintext = testing.token_for(viewer)
    admin = User.objects.create_superuser("root", password=None)
    client.force_login(admin)
    token = ApiToken.objects.get()
    response = client.post(
        "/admin/api/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked and token.revoked_at is not None
    entry = AuditEntry.objects.get(action="api_token.revoke")
    assert (entry.actor, entry.source) == ("root", "admin")
    client.logout()
    assert client.get(URL, **testing.bearer(plaintext)).status_code == 401


READS = [
    "/api/observability/traces",
    f"/api/observability/traces/{'ab' * 16}",
    "/api/observability/metrics",
    "/api/observability/checkpoints",
    "/api/observability/checkpoints/ck_00000000000000_000000000000",
    "/api/observability/circuit-breakers",
    "/api/observability/circuit-breakers/pay",
    "/api/observability/circuit-breakers/pay/events",
    "/api/observability/rate-limiters",
    "/api/observability/rate-limiters/search",
]
MUTATIONS = [
    ("post", "/api/observability/metrics/reset"),
    ("post", "/api/observability/checkpoints/cleanup"),
    ("delete", "/api/observability/checkpoints/ck_00000000000000_000000000000"),
    ("post", "/api/observability/circuit-breakers/pay/reset"),
]


@pytest.mark.parametrize("url", READS)
def test_every_read_is_401_anonymous_and_403_without_the_view_permission(
    client: Client, url: str
) -> None:
    assert client.get(url).status_code == 401
    nobody = testing.bearer(testing.token_for(testing.make_user("nobody")))
    assert client.get(url, **nobody).status_code == 403


@pytest.mark.parametrize(("method", "url"), MUTATIONS)
def test_every_mutation_is_401_anonymous_and_403_for_a_mere_viewer(
    client: Client, viewer: User, method: str, url: str
) -> None:
    assert getattr(client, method)(url).status_code == 401
    response = getattr(client, method)(url, **testing.bearer(testing.token_for(viewer)))
    assert response.status_code == 403


@override_settings(API_TOKEN_CACHE_TTL=0)
def test_a_token_and_its_user_are_found_in_one_query(
    viewer: User, django_assert_num_queries: Any
) -> None:
    from dashboard.api.tokens import authenticate_token

    plaintext = testing.token_for(viewer)
    assert authenticate_token(plaintext) is not None  # first use: records last_used_at
    with django_assert_num_queries(1):  # used again within the minute: no update
        token = authenticate_token(plaintext)
        assert token is not None and token.user.get_username() == "vera"
    with django_assert_num_queries(1):  # an unknown prefix: one query, no user
        assert authenticate_token(f"rdt_{'0' * 16}_{'A' * 43}") is None
