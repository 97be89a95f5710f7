"""One breaker card, built by ``selectors.card_for``: the page and every push show the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client

from dashboard import selectors
from dashboard.asgi import application
from dashboard.live import runtime
from dashboard.live.templatetags.live import dom_id
from dashboard.traces.models import SpanRecord, SpanStatus
from resilience.circuit_breaker import CircuitBreakerConfig, CircuitState, circuit_breaker_registry

pytestmark = pytest.mark.django_db(transaction=True)

TRACE_ID = "ab" * 16


def error_span_at(when: float) -> None:
    """The error span of the failing call, ended at the breaker's recorded failure."""
    end = datetime.fromtimestamp(when, tz=UTC)
    SpanRecord.objects.create(
        trace_id=TRACE_ID,
        span_id="cd" * 8,
        name="GET /pay",
        service="shop",
        start=end - timedelta(milliseconds=40),
        end=end,
        duration_us=40_000,
        status=SpanStatus.ERROR,
    )


@database_sync_to_async
def viewer_cookie() -> bytes:
    user = User.objects.create_user("viewer", password="pw-for-tests-123")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
async def socket() -> AsyncIterator[WebsocketCommunicator]:
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost")]
    headers.append((b"cookie", await viewer_cookie()))
    communicator = WebsocketCommunicator(application, "/ws/live/breakers/", headers=headers)
    yield communicator
    await communicator.disconnect()
    await runtime.stop()


def failed_breaker() -> str:
    """A breaker opened by a failing call whose error span is stored; its name."""
    breaker = circuit_breaker_registry.get_or_create(
        "payments", CircuitBreakerConfig(failure_threshold=1)
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    return breaker.name


async def test_card_for_links_the_last_failure_to_its_trace() -> None:
    name = failed_breaker()
    breaker = circuit_breaker_registry.get(name)
    assert breaker is not None
    await database_sync_to_async(error_span_at)(breaker.snapshot()["last_failure"]["time"])
    card = await database_sync_to_async(selectors.card_for)(breaker, history=0)
    assert isinstance(card, selectors.BreakerCard)
    assert card.state is CircuitState.OPEN and card.trace_id == TRACE_ID
    assert card.history == ()


async def test_a_pushed_state_keeps_the_trace_link(socket: WebsocketCommunicator) -> None:
    name = failed_breaker()
    breaker = circuit_breaker_registry.get(name)
    assert breaker is not None
    await database_sync_to_async(error_span_at)(breaker.snapshot()["last_failure"]["time"])
    link = f'href="/traces/{TRACE_ID}/"'

    connected, _ = await socket.connect()
    assert connected
    first = await socket.receive_from(timeout=5)
    assert link in first  # the cards sent on connect

    breaker.force_open(actor="op", reason="maintenance")  # a transition: a push
    state_id = f'id="{dom_id(name)}-state"'
    while state_id not in (pushed := await socket.receive_from(timeout=5)):
        pass
    assert 'data-state="forced_open"' in pushed
    assert link in pushed
