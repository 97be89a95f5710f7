"""Alert rules, notification channels, the alert history and its deliveries."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, validate_email
from django.db import models

from . import webhook_http


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class RuleKind(models.TextChoices):
    BREAKER_OPEN = "breaker_open", "Circuit breaker open"
    LIMITER_REJECTIONS = "limiter_rejections", "Rate limiter rejections per minute"
    METRIC_THRESHOLD = "metric_threshold", "Metric threshold"
    SPAN_ERROR_RATE = "span_error_rate", "Span error rate"
    SPAN_DROPS = "span_drops", "Dropped spans"
    CHECKPOINT_FAILURES = "checkpoint_failures", "Checkpoint verification failures"


class NotificationChannel(models.Model):
    """Where alerts go: a webhook, email recipients, or the dashboard's live banner."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"
        BANNER = "banner", "Dashboard banner"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    url = models.URLField(
        max_length=500, blank=True, default="", help_text="webhook: where the JSON is POSTed"
    )
    secret = models.CharField(
        max_length=200,
        blank=True,
        default=new_secret,
        help_text="webhook: HMAC-SHA256 key of the X-Alert-Signature header",
    )
    recipients = models.TextField(
        blank=True, default="", help_text="email: addresses separated by commas or new lines"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def recipient_list(self) -> list[str]:
        return [
            item.strip() for item in self.recipients.replace("\n", ",").split(",") if item.strip()
        ]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.WEBHOOK:
            if not self.url.startswith(("http://", "https://")):
                errors["url"] = "A webhook needs an http:// or https:// URL."
            else:
                try:
                    webhook_http.validate_url(
                        self.url,
                        allow_private=bool(
                            getattr(settings, "ALERTS_WEBHOOK_ALLOW_PRIVATE", False)
                        ),
                    )
                except webhook_http.UnsafeWebhook as exc:
                    errors["url"] = f"This URL would be refused: {exc}."
            if not self.secret:
                errors["secret"] = "A webhook needs a secret to sign its requests."
        elif self.kind == self.Kind.EMAIL:
            if not self.recipient_list:
                errors["recipients"] = "An email channel needs at least one recipient."
            for address in self.recipient_list:
                try:
                    validate_email(address)
                except ValidationError:
                    errors["recipients"] = f"{address!r} is not an email address."
                    break
        if errors:
            raise ValidationError(errors)


class AlertRule(models.Model):
    """A condition watched by the evaluator; ``parameters`` depend on ``kind``."""

    name = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=30, choices=RuleKind.choices)
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text='kind-specific settings, e.g. {"breaker": "payments*"} or '
        '{"metric": "latency_ms", "aggregate": "p95", "op": ">", "threshold": 250}',
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    for_seconds = models.FloatField(
        default=0,
        validators=[MinValueValidator(0)],
        help_text="the condition must hold this long before the alert fires (no single blips)",
    )
    cooldown_seconds = models.FloatField(
        default=300,
        validators=[MinValueValidator(0)],
        help_text="after an alert fires, the same rule and subject do not fire again this soon",
    )
    enabled = models.BooleanField(default=True)
    channels = models.ManyToManyField(
        NotificationChannel, blank=True, related_name="rules", help_text="who is notified"
    )
    last_error = models.TextField(
        blank=True, default="", help_text="why the last evaluation failed (empty when it worked)"
    )
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from .sources import parse_parameters

        if not isinstance(self.parameters, dict):
            raise ValidationError({"parameters": "Parameters must be a JSON object."})
        try:
            parse_parameters(self.kind, self.parameters)
        except (ValueError, TypeError) as exc:
            raise ValidationError({"parameters": str(exc)}) from exc


class Alert(models.Model):
    """One firing of one rule for one subject (a breaker, limiter, metric series...)."""

    class State(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    subject = models.CharField(max_length=300, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.FIRING)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="value seen when it fired")
    last_value = models.FloatField(null=True, blank=True, help_text="latest value seen")
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["rule", "subject", "state"], name="alert_rule_subject_state"),
            models.Index(fields=["state", "-started_at"], name="alert_state_recent"),
        ]

    def __str__(self) -> str:
        subject = f" [{self.subject}]" if self.subject else ""
        return f"{self.rule.name}{subject}: {self.state}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "rule": self.rule.name,
            "rule_id": self.rule_id,
            "kind": self.rule.kind,
            "subject": self.subject,
            "state": self.state,
            "severity": self.severity,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "value": self.value,
            "last_value": self.last_value,
            "message": self.message,
        }


class Delivery(models.Model):
    """One notification of one alert event (firing or resolved) to one channel."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (receiver's breaker open)"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(
        NotificationChannel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel_name = models.CharField(max_length=100)
    event = models.CharField(max_length=10, choices=Alert.State.choices)
    outcome = models.CharField(
        max_length=10, choices=Outcome.choices, default=Outcome.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="", help_text="what every viewer sees")
    detail = models.TextField(
        blank=True, default="", help_text="the failure in full: for channel editors only"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.alert} → {self.channel_name}: {self.outcome}"
