from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from dashboard.alerts.models import Alert, AlertRule, Delivery, RuleKind
from dashboard.api.testing import make_user

pytestmark = [pytest.mark.django_db]

API = "/api/observability/alerts"
T0 = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def viewer(client: Client) -> Client:
    client.force_login(make_user("viewer", "dashboard.view_dashboard"))
    return client


def make_alert(rule: AlertRule, *, minutes: int, state: str = "firing", **extra: Any) -> Alert:
    return Alert.objects.create(
        rule=rule,
        subject=extra.pop("subject", "payments"),
        state=state,
        severity=extra.pop("severity", rule.severity),
        started_at=T0 + timedelta(minutes=minutes),
        message=f"alert {minutes}",
        **extra,
    )


@pytest.fixture
def rules() -> tuple[AlertRule, AlertRule]:
    ok = AlertRule.objects.create(name="breakers", kind=RuleKind.BREAKER_OPEN, severity="critical")
    broken = AlertRule.objects.create(
        name="latency",
        kind=RuleKind.METRIC_THRESHOLD,
        parameters={"metric": "nope", "threshold": 1},
        last_error="RuleError: unknown metric 'nope'",
    )
    return ok, broken


def test_alerts_page_needs_login(client: Client) -> None:
    response = client.get("/alerts/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_alerts_page_needs_the_view_permission(client: Client) -> None:
    client.force_login(make_user("nobody"))
    assert client.get("/alerts/").status_code == 403


def test_alerts_page_lists_rules_with_status_and_error_and_recent_alerts(
    viewer: Client, rules: tuple[AlertRule, AlertRule]
) -> None:
    ok, _ = rules
    alert = make_alert(ok, minutes=1, value=2.5)
    Delivery.objects.create(
        alert=alert, channel_name="ops hook", event="firing", outcome="skipped", error="open"
    )

    response = viewer.get("/alerts/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-status="firing"' in html
    assert 'data-status="error"' in html
    assert "RuleError: unknown metric &#x27;nope&#x27;" in html
    assert f'data-alert="{alert.pk}"' in html
    assert "firing → ops hook: skipped" in html
    assert 'hx-trigger="every 5s"' in html


def test_htmx_poll_gets_the_fragment_only(
    viewer: Client, rules: tuple[AlertRule, AlertRule]
) -> None:
    response = viewer.get("/alerts/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'id="alert-rules"' in html
    assert "<html" not in html


def test_alerts_page_filters_by_state(viewer: Client, rules: tuple[AlertRule, AlertRule]) -> None:
    ok, _ = rules
    firing = make_alert(ok, minutes=1)
    resolved = make_alert(ok, minutes=2, state="resolved", subject="search")

    html = viewer.get("/alerts/?state=resolved").content.decode()

    assert f'data-alert="{resolved.pk}"' in html
    assert f'data-alert="{firing.pk}"' not in html


def test_api_lists_alerts_newest_first_with_deliveries(
    viewer: Client, rules: tuple[AlertRule, AlertRule]
) -> None:
    ok, _ = rules
    older = make_alert(ok, minutes=1, value=1.0)
    newer = make_alert(ok, minutes=2, state="resolved", ended_at=T0 + timedelta(minutes=3))
    Delivery.objects.create(
        alert=older, channel_name="mail", event="firing", outcome="sent", attempts=1
    )

    body = viewer.get(API).json()

    assert body["total"] == 2
    assert body["has_next"] is False
    assert [item["id"] for item in body["items"]] == [newer.pk, older.pk]
    first, second = body["items"]
    assert first["state"] == "resolved"
    assert first["ended_at"].startswith("2027-01-01T00:03")
    assert second["rule"] == "breakers"
    assert second["value"] == 1.0
    assert second["deliveries"][0]["channel"] == "mail"
    assert second["deliveries"][0]["outcome"] == "sent"


def test_api_filters_and_paginates(viewer: Client, rules: tuple[AlertRule, AlertRule]) -> None:
    ok, broken = rules
    for minute in range(5):
        make_alert(ok, minutes=minute)
    make_alert(broken, minutes=10, severity="info", state="resolved")

    page = viewer.get(API, {"state": "firing", "page": 2, "page_size": 2}).json()
    by_rule = viewer.get(API, {"rule": broken.pk}).json()
    by_severity = viewer.get(API, {"severity": "info"}).json()
    since = viewer.get(API, {"since": (T0 + timedelta(minutes=4)).isoformat()}).json()

    assert (page["total"], page["page"], len(page["items"]), page["has_next"]) == (5, 2, 2, True)
    assert by_rule["total"] == 1
    assert by_severity["items"][0]["rule"] == "latency"
    assert since["total"] == 2


def test_api_rejects_an_unknown_state_with_422(viewer: Client) -> None:
    response = viewer.get(API, {"state": "exploded"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "state"


def test_api_needs_authentication_and_permission(client: Client) -> None:
    assert client.get(API).status_code == 401
    client.force_login(make_user("nobody"))
    assert client.get(API).status_code == 403


def test_admin_rejects_a_rule_with_bad_parameters(client: Client) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", password=None))
    response = client.post(
        "/admin/alerts/alertrule/add/",
        {
            "name": "latency",
            "kind": RuleKind.METRIC_THRESHOLD,
            "parameters": '{"metric": "latency_ms", "threshold": "high"}',
            "severity": "warning",
            "enabled": "on",
            "for_seconds": "0",
            "cooldown_seconds": "60",
        },
    )

    assert response.status_code == 200
    assert "threshold must be a number" in response.content.decode()
    assert not AlertRule.objects.exists()


def test_admin_changes_to_rules_are_audited(client: Client) -> None:
    from django.contrib.auth.models import User

    from dashboard.models import AuditEntry

    client.force_login(User.objects.create_superuser("root", password=None))
    response = client.post(
        "/admin/alerts/alertrule/add/",
        {
            "name": "open breakers",
            "kind": RuleKind.BREAKER_OPEN,
            "parameters": '{"breaker": "payments*"}',
            "severity": "critical",
            "enabled": "on",
            "for_seconds": "10",
            "cooldown_seconds": "60",
        },
    )

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="alerts.rule.add")
    assert entry.actor == "root"
    assert entry.target == "open breakers"
