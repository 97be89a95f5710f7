"""Admin security: tokens only for yourself, bulk deletes audited like single ones."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.alerts.models import AlertRule, NotificationChannel
from dashboard.api import testing
from dashboard.api.models import ApiToken
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db

ADD = "/admin/api/apitoken/add/"


def _add_form(user: User) -> dict[str, object]:
    return {"user": user.pk, "name": "mine", "expires_at_0": "", "expires_at_1": ""}


@pytest.fixture
def token_clerk() -> User:
    user = testing.make_user("clerk", "api.add_apitoken", "api.view_apitoken")
    user.is_staff = True
    user.save()
    return user


def test_staff_cannot_mint_a_token_for_a_superuser(client: Client, token_clerk: User) -> None:
    root = User.objects.create_superuser("root", password=None)
    client.force_login(token_clerk)
    response = client.post(ADD, _add_form(root))
    assert response.status_code == 200  # the form again, with an error
    assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()
    assert not AuditEntry.objects.filter(action="api_token.create").exists()


def test_the_add_form_offers_only_yourself(client: Client, token_clerk: User) -> None:
    User.objects.create_superuser("root", password=None)
    client.force_login(token_clerk)
    page = client.get(ADD).content.decode()
    assert ">clerk<" in page and ">root<" not in page


def test_staff_can_mint_a_token_for_themselves(client: Client, token_clerk: User) -> None:
    client.force_login(token_clerk)
    response = client.post(ADD, _add_form(token_clerk), follow=True)
    assert response.status_code == 200
    assert ApiToken.objects.get().user == token_clerk


def test_a_superuser_may_still_mint_for_others(client: Client, token_clerk: User) -> None:
    root = User.objects.create_superuser("root", password=None)
    client.force_login(root)
    client.post(ADD, _add_form(token_clerk), follow=True)
    assert ApiToken.objects.get().user == token_clerk


def _bulk_delete(client: Client, url: str, pks: list[int]) -> None:
    response = client.post(
        url,
        {"action": "delete_selected", "_selected_action": pks, "post": "yes"},
        follow=True,
    )
    assert response.status_code == 200


def test_bulk_token_delete_is_audited(admin_client: Client) -> None:
    owner = testing.make_user("owner")
    testing.token_for(owner, name="a")
    testing.token_for(owner, name="b")
    _bulk_delete(
        admin_client, "/admin/api/apitoken/", list(ApiToken.objects.values_list("pk", flat=True))
    )
    assert not ApiToken.objects.exists()
    targets = sorted(
        AuditEntry.objects.filter(action="api_token.delete").values_list("target", flat=True)
    )
    assert len(targets) == 2 and sorted(t.split(" ")[1] for t in targets) == ["(a)", "(b)"]


def test_bulk_alert_rule_and_channel_deletes_are_audited(admin_client: Client) -> None:
    channel = NotificationChannel.objects.create(name="ops", kind="banner")
    rule = AlertRule.objects.create(name="r1", kind="breaker_open", parameters={})
    _bulk_delete(admin_client, "/admin/alerts/alertrule/", [rule.pk])
    _bulk_delete(admin_client, "/admin/alerts/notificationchannel/", [channel.pk])
    assert not AlertRule.objects.exists() and not NotificationChannel.objects.exists()
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"alerts.rule.delete", "alerts.channel.delete"} <= actions
