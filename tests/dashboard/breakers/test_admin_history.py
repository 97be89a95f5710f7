from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.breakers.models import BreakerEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event() -> BreakerEvent:
    return BreakerEvent.objects.create(
        breaker="payments",
        from_state="closed",
        to_state="open",
        reason="failure_threshold reached",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        process="host:1",
    )


def test_history_is_listed_and_filterable(admin_client: Client, event: BreakerEvent) -> None:
    BreakerEvent.objects.create(
        breaker="search",
        from_state="open",
        to_state="half_open",
        reason="timeout elapsed",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        process="host:1",
    )
    url = reverse("admin:breakers_breakerevent_changelist")
    body = admin_client.get(url, {"to_state__exact": "open"}).content.decode()
    assert "failure_threshold reached" in body
    assert "timeout elapsed" not in body
    body = admin_client.get(url, {"q": "search"}).content.decode()
    assert "timeout elapsed" in body


def test_history_is_read_only(admin_client: Client, event: BreakerEvent) -> None:
    assert admin_client.get(reverse("admin:breakers_breakerevent_add")).status_code == 403
    change = reverse("admin:breakers_breakerevent_change", args=[event.pk])
    response = admin_client.post(change, {"reason": "tampered"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.reason == "failure_threshold reached"
    delete = reverse("admin:breakers_breakerevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert BreakerEvent.objects.filter(pk=event.pk).exists()
