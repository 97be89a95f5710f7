"""The banner reaches a browser's socket: engine → notifier → channel layer → live consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client

from dashboard.alerts.delivery import Notifier
from dashboard.alerts.engine import Engine, EvaluationReport
from dashboard.alerts.models import AlertRule, Delivery, NotificationChannel, RuleKind
from dashboard.asgi import application
from dashboard.live import runtime
from resilience.circuit_breaker import CircuitBreaker

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def viewer_cookie() -> bytes:
    user = User.objects.create_user("viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@database_sync_to_async
def banner_rule() -> None:
    rule = AlertRule.objects.create(
        name="payments open", kind=RuleKind.BREAKER_OPEN, parameters={"breaker": "payments"}
    )
    rule.channels.add(NotificationChannel.objects.create(name="banner", kind="banner"))


@pytest.fixture
async def overview() -> AsyncIterator[WebsocketCommunicator]:
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    headers.append((b"cookie", await viewer_cookie()))
    communicator = WebsocketCommunicator(application, "/ws/live/overview/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_from()  # the page's initial state
    yield communicator
    await communicator.disconnect()
    await runtime.stop()


async def test_a_firing_alert_shows_as_a_banner_on_an_open_live_page(
    overview: WebsocketCommunicator,
) -> None:
    await banner_rule()
    CircuitBreaker("payments").force_open()
    # The evaluator runs on its own thread, as in the server; the banner is sent on
    # the server's event loop (the in-memory layer's queues live there).
    engine = Engine(notify=Notifier())

    def evaluate() -> EvaluationReport:
        try:
            return engine.evaluate_all()
        finally:
            connection.close()  # this pool thread's own connection

    report = await sync_to_async(evaluate, thread_sensitive=False)()

    html = ""
    while "alert-banner" not in html:
        html = await overview.receive_from(timeout=2)

    [alert] = report.fired
    assert f'id="alert-banner-{alert.pk}"' in html
    assert "breaker payments is forced_open" in html
    outcome = await database_sync_to_async(
        lambda: Delivery.objects.values_list("outcome", flat=True).get()
    )()
    assert outcome == Delivery.Outcome.SENT
