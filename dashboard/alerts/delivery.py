"""Send alert events to channels: signed webhooks, email, the dashboard's live banner.

Each (alert event, channel) pair is one :class:`~dashboard.alerts.models.Delivery` row,
created ``pending`` and finished ``sent``, ``failed`` or ``skipped``. Webhook attempts
go through one of the project's own circuit breakers per channel
(``alerts.webhook:<channel name>``): after a few failures in a row the breaker opens,
and until it lets a trial through, deliveries to that receiver are skipped at once
(recorded, no network, no retry sleeps), so a dead receiver cannot pile up work.

Webhook URLs are checked at delivery time against server-side request forgery (see
:mod:`dashboard.alerts.webhook_http`): no loopback/private/metadata address unless
``ALERTS_WEBHOOK_ALLOW_PRIVATE``, no redirects, a total deadline per delivery. What went
wrong is logged and kept in ``Delivery.detail`` (shown to channel editors in the admin);
``Delivery.error``, which every dashboard viewer sees, only says which kind of failure.

Webhook requests are POSTed JSON with a Slack-compatible ``text`` field and these
headers, so a receiver can check who sent them and drop replays::

    X-Alert-Timestamp: <epoch seconds>
    X-Alert-Signature: sha256=<hex HMAC-SHA256 of b"<timestamp>." + body, keyed with
                       the channel's secret>
    X-Alert-Delivery:  <delivery id, the same on every retry>
    X-Alert-Event:     firing | resolved
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections
from django.template.loader import render_to_string
from django.utils import timezone

from resilience._validate import duration, positive, positive_int
from resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    circuit_breaker_registry,
)
from resilience.dispatch import BatchDispatcher
from resilience.errors import CircuitOpenError

from . import webhook_http
from .banner import banner_groups, banner_html, headline, push_banner
from .models import Alert, Delivery, NotificationChannel

__all__ = [
    "banner_groups",
    "banner_html",
    "DeliveryPolicy",
    "Notifier",
    "payload",
    "push_banner",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

GENERIC_FAILURE = "delivery failed (details: server log, or the channel's admin page)"
SIGNATURE_HEADER = "X-Alert-Signature"
TIMESTAMP_HEADER = "X-Alert-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Alert-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


SIGNATURE_TOLERANCE = 300.0


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if ``signature`` is ``sign(secret, timestamp, body)`` (constant-time) and
    ``timestamp`` (epoch seconds) is within ``tolerance`` seconds of ``now``, so a
    captured request cannot be replayed later."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def payload(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON body of a webhook: Slack-compatible ``text`` plus structured fields."""
    return {
        "text": f"{headline(alert, event)} — {alert.message}",
        "event": event,
        "alert": alert.as_dict(),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPolicy:
    """How hard webhook deliveries try, and when a receiver's breaker opens.

    Args:
        attempts: tries per delivery (the first included).
        backoff: seconds before the second try; doubled for each later one.
        max_backoff: cap of one wait.
        timeout: seconds one HTTP request may take, from name resolution to the answer.
        deadline: seconds all attempts of one delivery may take together, waits included.
        failure_threshold: consecutive failed attempts that open the receiver's breaker.
        reset_timeout: seconds the breaker stays open before a trial request.
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    timeout: float = 5.0
    deadline: float = 30.0
    failure_threshold: int = 3
    reset_timeout: float = 60.0

    def __post_init__(self) -> None:
        positive_int("attempts", self.attempts)
        duration("backoff", self.backoff)
        duration("max_backoff", self.max_backoff)
        positive("timeout", self.timeout)
        positive("deadline", self.deadline)
        positive_int("failure_threshold", self.failure_threshold)
        duration("reset_timeout", self.reset_timeout)

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


class Notifier:
    """Creates delivery rows for an alert event and sends them, inline or in the background.

    Args:
        policy: webhook retries and breaker settings.
        sleep: waits between retries (tests pass a fake).
        clock: monotonic seconds, for the delivery deadline (tests pass a fake).
        background: send on a worker thread (a ``BatchDispatcher``); otherwise inline.
    """

    def __init__(
        self,
        *,
        policy: DeliveryPolicy | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
    ) -> None:
        self.policy = policy or DeliveryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._dispatcher: BatchDispatcher[int] | None = None
        if background:
            self._dispatcher = BatchDispatcher(
                self._send_batch, max_queue=1000, max_batch=20, interval=0.2, name="alert-delivery"
            )

    # -- entry points ----------------------------------------------------------------------

    def __call__(self, alert: Alert, event: str) -> list[Delivery]:
        return self.notify(alert, event)

    def notify(self, alert: Alert, event: str) -> list[Delivery]:
        """Record one pending delivery per enabled channel of the alert's rule, and send them."""
        channels = [channel for channel in alert.rule.channels.all() if channel.enabled]
        deliveries = [
            Delivery.objects.create(
                alert=alert, channel=channel, channel_name=channel.name, event=event
            )
            for channel in channels
        ]
        for delivery in deliveries:
            if self._dispatcher is None:
                self.send(delivery)
            elif not self._dispatcher.submit(delivery.pk):
                self._finish(delivery, Delivery.Outcome.FAILED, "delivery queue full")
        return deliveries

    def flush(self, timeout: float = 10.0) -> bool:
        return self._dispatcher.flush(timeout) if self._dispatcher is not None else True

    def shutdown(self, timeout: float = 10.0) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown(timeout)

    def stats(self) -> dict[str, int]:
        d = self._dispatcher
        if d is None:
            return {"queued": 0, "dropped": 0, "sent": 0, "errors": 0}
        return {
            "queued": len(d),
            "dropped": d.dropped,
            "sent": d.delivered,
            "errors": d.handler_errors,
        }

    def send(self, delivery: Delivery) -> Delivery:
        """Deliver one row now and record its outcome; never raises for a send failure."""
        channel = delivery.channel
        if channel is None:
            return self._finish(delivery, Delivery.Outcome.FAILED, "channel was deleted")
        try:
            if channel.kind == NotificationChannel.Kind.WEBHOOK:
                return self._webhook(delivery, channel)
            if channel.kind == NotificationChannel.Kind.EMAIL:
                return self._email(delivery, channel)
            if channel.kind == NotificationChannel.Kind.BANNER:
                return self._banner(delivery)
            return self._finish(delivery, Delivery.Outcome.FAILED, f"unknown kind {channel.kind!r}")
        except Exception as exc:
            logger.exception("alert delivery %s failed", delivery.pk)
            return self._fail(delivery, _describe(exc), attempts=1)

    def breaker_for(self, channel: NotificationChannel) -> CircuitBreaker:
        """The circuit breaker guarding ``channel``'s receiver (created on first use)."""
        config = CircuitBreakerConfig(
            failure_threshold=self.policy.failure_threshold,
            success_threshold=1,
            half_open_max_calls=1,
            timeout=self.policy.reset_timeout,
            # A refused URL is the channel's configuration, not the receiver's health.
            ignored_exceptions=(webhook_http.UnsafeWebhook,),
        )
        return circuit_breaker_registry.get_or_create(f"alerts.webhook:{channel.name}", config)

    # -- channels --------------------------------------------------------------------------

    def _webhook(self, delivery: Delivery, channel: NotificationChannel) -> Delivery:
        body = json.dumps(payload(delivery.alert, delivery.event), default=str).encode()
        breaker = self.breaker_for(channel)
        error = ""
        attempt = 0
        policy = self.policy
        deadline = self._clock() + policy.deadline
        allow_private = bool(getattr(settings, "ALERTS_WEBHOOK_ALLOW_PRIVATE", False))
        while attempt < policy.attempts:
            remaining = deadline - self._clock()
            if remaining <= 0:
                error = f"{error}; delivery deadline ({policy.deadline:g}s) passed".lstrip("; ")
                break
            attempt += 1
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "resilience-dashboard-alerts/1",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
                "X-Alert-Delivery": str(delivery.pk),
                "X-Alert-Event": delivery.event,
            }
            try:
                status = breaker.call(
                    webhook_http.post,
                    channel.url,
                    body,
                    headers,
                    timeout=min(policy.timeout, remaining),
                    allow_private=allow_private,
                )
            except CircuitOpenError as exc:
                if not error:
                    return self._finish(
                        delivery, Delivery.Outcome.SKIPPED, str(exc), attempts=attempt - 1
                    )
                return self._fail(delivery, f"{error}; then {exc}", attempts=attempt - 1)
            except webhook_http.UnsafeWebhook as exc:
                # Nothing was sent; retrying cannot change the answer.
                return self._fail(delivery, f"refused: {exc}", attempts=attempt)
            except Exception as exc:
                error = _describe(exc)
                if attempt < policy.attempts:
                    self._sleep(max(min(policy.wait(attempt), deadline - self._clock()), 0.0))
                continue
            if 200 <= status < 300:
                return self._finish(delivery, Delivery.Outcome.SENT, "", attempts=attempt)
            message = f"receiver answered HTTP {status}"
            if 300 <= status < 400:
                message += " (a redirect; webhooks never follow one)"
            return self._fail(delivery, message, attempts=attempt)
        return self._fail(delivery, error, attempts=attempt)

    def _email(self, delivery: Delivery, channel: NotificationChannel) -> Delivery:
        alert = delivery.alert
        body = render_to_string(
            "dashboard/alerts/email.txt",
            {"alert": alert, "event": delivery.event, "headline": headline(alert, delivery.event)},
        )
        send_mail(
            headline(alert, delivery.event),
            body,
            None,  # DEFAULT_FROM_EMAIL
            channel.recipient_list,
            fail_silently=False,
        )
        return self._finish(delivery, Delivery.Outcome.SENT, "", attempts=1)

    def _banner(self, delivery: Delivery) -> Delivery:
        sent = push_banner(delivery.alert, delivery.event)
        if not sent:
            return self._finish(delivery, Delivery.Outcome.FAILED, "no channel layer", attempts=1)
        return self._finish(delivery, Delivery.Outcome.SENT, "", attempts=1)

    # -- helpers ---------------------------------------------------------------------------

    def _send_batch(self, ids: list[int]) -> None:
        close_old_connections()
        try:
            for delivery in Delivery.objects.filter(pk__in=ids).select_related(
                "alert__rule", "channel"
            ):
                self.send(delivery)
        finally:
            close_old_connections()

    @classmethod
    def _fail(cls, delivery: Delivery, detail: str, *, attempts: int) -> Delivery:
        # Every viewer reads `error` (API, alerts page): a connection error or a status
        # there would let a channel editor map internal ports. Only the kind of failure
        # goes there; the detail goes to the log and to `detail` (admin, channel editors).
        logger.warning(
            "alert delivery %s to channel %r failed: %s", delivery.pk, delivery.channel_name, detail
        )
        return cls._finish(
            delivery, Delivery.Outcome.FAILED, GENERIC_FAILURE, attempts=attempts, detail=detail
        )

    @staticmethod
    def _finish(
        delivery: Delivery, outcome: str, error: str, *, attempts: int = 0, detail: str = ""
    ) -> Delivery:
        delivery.outcome = outcome
        delivery.error = error[:2000]
        delivery.detail = (detail or error)[:2000]
        delivery.attempts = attempts
        delivery.finished_at = timezone.now()
        delivery.save(update_fields=["outcome", "error", "detail", "attempts", "finished_at"])
        return delivery


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
