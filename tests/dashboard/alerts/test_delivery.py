from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail

from dashboard.alerts.delivery import DeliveryPolicy, Notifier, push_banner, verify_signature
from dashboard.alerts.models import Alert, AlertRule, Delivery, NotificationChannel, RuleKind
from resilience.circuit_breaker import CircuitState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _loopback_receivers_allowed(settings: Any) -> None:
    """These tests deliver to a receiver on 127.0.0.1, refused by default (SSRF guard)."""
    settings.ALERTS_WEBHOOK_ALLOW_PRIVATE = True


class Receiver:
    """A loopback HTTP server that records requests and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def receive(layer: Any, channel: str) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), 2)  # type: ignore[no-any-return]

    return async_to_sync(wait)()


def firing_alert(*channels: NotificationChannel, subject: str = "payments") -> Alert:
    rule = AlertRule.objects.create(
        name=f"payments open {subject}", kind=RuleKind.BREAKER_OPEN, severity="critical"
    )
    rule.channels.set(channels)
    return Alert.objects.create(
        rule=rule,
        subject=subject,
        severity="critical",
        started_at=datetime(2027, 1, 1, tzinfo=UTC),
        value=3.0,
        message="breaker payments is open",
    )


def webhook(url: str, name: str = "ops") -> NotificationChannel:
    return NotificationChannel.objects.create(name=name, kind="webhook", url=url)


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_webhook_posts_slack_compatible_json_with_a_valid_signature(receiver: Receiver) -> None:
    channel = webhook(receiver.url)
    alert = firing_alert(channel)

    [delivery] = Notifier().notify(alert, "firing")

    assert delivery.outcome == Delivery.Outcome.SENT
    assert delivery.attempts == 1
    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert verify_signature(
        channel.secret, headers["X-Alert-Timestamp"], body, headers["X-Alert-Signature"]
    )
    assert not verify_signature(
        "other secret", headers["X-Alert-Timestamp"], body, headers["X-Alert-Signature"]
    )
    data = json.loads(body)
    assert data["text"].startswith("[FIRING] critical: payments open payments [payments]")
    assert data["event"] == "firing"
    assert data["alert"]["subject"] == "payments"
    assert data["alert"]["value"] == 3.0
    assert headers["X-Alert-Delivery"] == str(delivery.pk)
    assert headers["Content-Type"] == "application/json"


def test_webhook_retries_server_errors_with_growing_backoff() -> None:
    sleep = FakeSleep()
    with Receiver(statuses=[503, 500, 200]) as receiver:
        alert = firing_alert(webhook(receiver.url))
        [delivery] = Notifier(sleep=sleep, policy=DeliveryPolicy(backoff=0.5)).notify(
            alert, "firing"
        )

    assert delivery.outcome == Delivery.Outcome.SENT
    assert delivery.attempts == 3
    assert sleep.waits == [0.5, 1.0]
    assert len(receiver.requests) == 3
    # The same delivery id on every retry lets the receiver drop duplicates.
    assert {r["headers"]["X-Alert-Delivery"] for r in receiver.requests} == {str(delivery.pk)}


def test_webhook_client_error_fails_at_once_without_tripping_the_breaker() -> None:
    sleep = FakeSleep()
    notifier = Notifier(sleep=sleep)
    with Receiver(statuses=[404, 404, 404, 404]) as receiver:
        channel = webhook(receiver.url)
        for index in range(4):
            [delivery] = notifier.notify(firing_alert(channel, subject=f"s{index}"), "firing")
            assert delivery.outcome == Delivery.Outcome.FAILED
            assert "HTTP 404" in delivery.detail

    assert sleep.waits == []
    assert len(receiver.requests) == 4
    assert notifier.breaker_for(channel).state is CircuitState.CLOSED


def test_dead_receiver_trips_the_breaker_and_later_deliveries_are_skipped_fast() -> None:
    sleep = FakeSleep()
    notifier = Notifier(sleep=sleep, policy=DeliveryPolicy(attempts=3, failure_threshold=3))
    channel = webhook(closed_port_url())

    [first] = notifier.notify(firing_alert(channel, subject="a"), "firing")
    assert first.outcome == Delivery.Outcome.FAILED
    assert first.attempts == 3
    assert "refused" in first.detail.lower()
    assert notifier.breaker_for(channel).state is CircuitState.OPEN
    waits_after_first = list(sleep.waits)

    later = [
        notifier.notify(firing_alert(channel, subject=f"later-{i}"), "firing")[0] for i in range(5)
    ]

    assert [d.outcome for d in later] == [Delivery.Outcome.SKIPPED] * 5
    assert all(d.attempts == 0 and "open" in d.error for d in later)
    assert sleep.waits == waits_after_first  # no retries, no backoff for skipped ones
    # Fast because never tried: the open breaker rejected each one without a connection.
    assert notifier.breaker_for(channel).snapshot()["calls"]["rejected"] == 5
    assert Delivery.objects.filter(outcome=Delivery.Outcome.SKIPPED).count() == 5


def test_email_channel_lands_in_the_outbox() -> None:
    channel = NotificationChannel.objects.create(
        name="on-call", kind="email", recipients="a@example.com,\nb@example.com"
    )
    alert = firing_alert(channel)

    [delivery] = Notifier().notify(alert, "resolved")

    assert delivery.outcome == Delivery.Outcome.SENT
    [message] = mail.outbox
    assert message.to == ["a@example.com", "b@example.com"]
    assert message.subject == "[RESOLVED] critical: payments open payments [payments]"
    assert "breaker payments is open" in message.body
    assert "Subject:   payments" in message.body


def test_banner_is_sent_to_the_live_pages_over_the_channel_layer() -> None:
    layer = get_channel_layer()
    channel_name = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("live.overview", channel_name)
    alert = firing_alert(NotificationChannel.objects.create(name="banner", kind="banner"))
    try:
        [delivery] = Notifier().notify(alert, "firing")
        message = receive(layer, channel_name)
    finally:
        async_to_sync(layer.group_discard)("live.overview", channel_name)

    assert delivery.outcome == Delivery.Outcome.SENT
    assert message["type"] == "live.fragment"
    assert message["event"] == "firing"
    assert f'id="alert-banner-{alert.pk}"' in message["html"]
    assert 'hx-swap-oob="afterbegin:main"' in message["html"]
    assert "breaker payments is open" in message["html"]


def test_resolved_banner_replaces_the_firing_one() -> None:
    layer = get_channel_layer()
    channel_name = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("live.breakers", channel_name)
    alert = firing_alert()
    try:
        assert push_banner(alert, "resolved")
        message = receive(layer, channel_name)
    finally:
        async_to_sync(layer.group_discard)("live.breakers", channel_name)

    assert f'<div id="alert-banner-{alert.pk}" hx-swap-oob="outerHTML"' in message["html"]
    assert "[RESOLVED]" in message["html"]


def test_disabled_channels_get_no_delivery(receiver: Receiver) -> None:
    channel = webhook(receiver.url)
    channel.enabled = False
    channel.save()

    assert Notifier().notify(firing_alert(channel), "firing") == []
    assert receiver.requests == []


@pytest.mark.django_db(transaction=True)
def test_background_notifier_sends_on_its_worker_thread(receiver: Receiver) -> None:
    notifier = Notifier(background=True)
    try:
        [delivery] = notifier.notify(firing_alert(webhook(receiver.url)), "firing")
        assert notifier.flush(5)
    finally:
        notifier.shutdown(5)

    delivery.refresh_from_db()
    assert delivery.outcome == Delivery.Outcome.SENT
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"kind": "webhook", "url": ""}, "url"),
        ({"kind": "webhook", "url": "http://x.test/", "secret": ""}, "secret"),
        ({"kind": "email", "recipients": ""}, "recipients"),
        ({"kind": "email", "recipients": "ops@example.com, not-an-address"}, "recipients"),
    ],
)
def test_channel_validation_names_the_missing_setting(values: dict[str, Any], field: str) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as raised:
        NotificationChannel(name="x", **values).full_clean()
    assert field in raised.value.message_dict


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        DeliveryPolicy(attempts=0)
    assert DeliveryPolicy(backoff=1, max_backoff=3).wait(5) == 3
