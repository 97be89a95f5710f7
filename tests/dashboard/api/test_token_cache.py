"""dashboard/api/token_cache.py: cached token lookups, and everything that must end them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone

from dashboard.api import testing, throttle, token_cache
from dashboard.api.models import ApiToken
from dashboard.api.tokens import authenticate_token, hash_secret, revoke_token
from tests.clock import FakeClock

pytestmark = pytest.mark.django_db

URL = "/api/observability/metrics"
VIEW = "dashboard.view_dashboard"


@pytest.fixture(autouse=True)
def _fresh(clock: FakeClock) -> Iterator[None]:
    throttle.reset()
    token_cache.reset(clock=clock)
    yield
    token_cache.reset()
    throttle.reset()


@pytest.fixture
def viewer() -> User:
    return testing.make_user("vera", VIEW)


def _view_permission() -> Permission:
    return Permission.objects.get(content_type__app_label="dashboard", codename="view_dashboard")


def read(client: Client, token: str) -> int:
    return int(client.get(URL, **testing.bearer(token)).status_code)


def test_a_cached_token_is_checked_without_a_query(
    client: Client, viewer: User, django_assert_num_queries: Any
) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200  # first use: token, user, permissions, last_used_at
    assert token_cache.size() == 1
    with django_assert_num_queries(0):  # the permission check included
        found = authenticate_token(token)
        assert found is not None and found.user.has_perm(VIEW)
    with django_assert_num_queries(0):  # /metrics reads no table: no query at all
        assert read(client, token) == 200


def test_the_plaintext_is_not_kept_only_its_hash(viewer: User) -> None:
    token = testing.token_for(viewer)
    authenticate_token(token)
    assert list(token_cache._entries) == [hash_secret(token)]


def test_revoking_a_token_ends_its_cached_use_at_once(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    revoke_token(token=ApiToken.objects.get(), actor=None, source="command")
    assert read(client, token) == 401


def test_deleting_a_token_ends_its_cached_use_at_once(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    ApiToken.objects.get().delete()
    assert read(client, token) == 401


def test_deactivating_the_user_ends_the_cached_token_at_once(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    viewer.is_active = False
    viewer.save()
    assert read(client, token) == 401


def test_deleting_the_user_ends_the_cached_token_at_once(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    viewer.delete()
    assert read(client, token) == 401


def test_removing_a_users_permission_is_seen_at_once(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    viewer.user_permissions.remove(_view_permission())
    assert read(client, token) == 403


def test_granting_a_permission_is_seen_at_once(client: Client) -> None:
    nobody = testing.make_user("nobody")
    token = testing.token_for(nobody)
    assert read(client, token) == 403
    nobody.user_permissions.add(_view_permission())
    assert read(client, token) == 200


def test_a_groups_permissions_and_membership_changes_are_seen_at_once(client: Client) -> None:
    member = testing.make_user("gus")
    group = Group.objects.create(name="viewers")
    group.permissions.add(_view_permission())
    member.groups.add(group)
    token = testing.token_for(member)
    assert read(client, token) == 200
    group.permissions.clear()
    assert read(client, token) == 403
    group.permissions.add(_view_permission())
    assert read(client, token) == 200
    member.groups.remove(group)
    assert read(client, token) == 403
    member.groups.add(group)
    assert read(client, token) == 200
    group.delete()
    assert read(client, token) == 403


def test_losing_superuser_is_seen_at_once(client: Client) -> None:
    boss = User.objects.create_superuser("boss", password=None)
    token = testing.token_for(boss)
    assert read(client, token) == 200
    boss.is_superuser = False
    boss.save()
    assert read(client, token) == 403


def test_expiry_is_checked_on_every_cached_use(
    client: Client, viewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires = timezone.now() + timedelta(minutes=10)
    token = testing.token_for(viewer, expires_at=expires)
    assert read(client, token) == 200
    later = expires + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert token_cache.size() == 1  # still cached...
    assert read(client, token) == 401  # ...but expired


def test_a_change_no_signal_reports_is_seen_when_the_entry_expires(
    client: Client, viewer: User, clock: FakeClock
) -> None:
    """Another process's revocation (or a bulk update()) is seen within the TTL."""
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    ApiToken.objects.update(revoked=True)  # no signal: as if another process did it
    clock.advance(token_cache.ttl() - 0.001)
    assert read(client, token) == 200  # the documented staleness bound
    clock.advance(0.002)
    assert read(client, token) == 401


@override_settings(API_TOKEN_CACHE_TTL=0)
def test_a_ttl_of_zero_turns_the_cache_off(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    assert read(client, token) == 200
    assert token_cache.size() == 0
    ApiToken.objects.update(revoked=True)
    assert read(client, token) == 401


def test_failed_lookups_are_not_cached(client: Client, viewer: User) -> None:
    token = testing.token_for(viewer)
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert read(client, wrong) == 401
    assert token_cache.size() == 0


def test_a_lookup_racing_a_change_does_not_store_what_it_read(viewer: User) -> None:
    """It read the token before a revocation committed: its result must not outlive it."""
    token = testing.token_for(viewer)
    seen = token_cache.generation()
    stale = ApiToken.objects.select_related("user").get()
    revoke_token(token=ApiToken.objects.get(), actor=None, source="command")
    token_cache.put(hash_secret(token), stale, seen)
    assert token_cache.size() == 0
    assert authenticate_token(token) is None


def test_a_change_inside_a_transaction_clears_again_when_it_commits(viewer: User) -> None:
    token = testing.token_for(viewer)
    key = hash_secret(token)
    with transaction.atomic():
        revoke_token(token=ApiToken.objects.get(), actor=None, source="command")
        # A lookup on another connection still sees the old row until the commit.
        seen = token_cache.generation()
        token_cache.put(key, ApiToken.objects.select_related("user").get(), seen)
        assert token_cache.size() == 1
    # pytest-django's test transaction: run the on_commit hooks as a commit would.
    from django.db import connection

    for _, hook, _ in connection.run_on_commit:
        hook()
    assert token_cache.size() == 0


def test_each_use_gets_its_own_copy(viewer: User) -> None:
    token = testing.token_for(viewer)
    first = authenticate_token(token)
    assert first is not None
    first.user.first_name = "changed by one request"
    first.name = "changed"
    second = authenticate_token(token)
    assert second is not None
    assert second is not first and second.user is not first.user
    assert second.user.first_name == "" and second.name == "tests"


def test_last_used_at_is_still_written_once_a_minute(
    viewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = testing.token_for(viewer)
    start = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: start)
    authenticate_token(token)
    assert ApiToken.objects.get().last_used_at == start
    later = start + timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: later)
    authenticate_token(token)  # a cache hit
    assert ApiToken.objects.get().last_used_at == later
