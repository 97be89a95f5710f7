"""Reads for the alerts page and API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Prefetch, Q, QuerySet

from .models import Alert, AlertRule, Delivery


def list_alerts(
    *,
    state: str | None = None,
    severity: str | None = None,
    rule: int | None = None,
    subject: str | None = None,
    since: datetime | None = None,
) -> QuerySet[Alert]:
    """Alerts, newest first, with their rule and deliveries loaded."""
    alerts = Alert.objects.select_related("rule").prefetch_related(
        Prefetch("deliveries", queryset=Delivery.objects.order_by("created_at", "id"))
    )
    if state:
        alerts = alerts.filter(state=state)
    if severity:
        alerts = alerts.filter(severity=severity)
    if rule is not None:
        alerts = alerts.filter(rule_id=rule)
    if subject:
        alerts = alerts.filter(subject=subject)
    if since is not None:
        alerts = alerts.filter(started_at__gte=since)
    return alerts.order_by("-started_at", "-id")


@dataclass(frozen=True, slots=True)
class RuleStatus:
    rule: AlertRule
    firing: int
    status: str  # "firing", "error", "ok", "disabled", "new"


def rule_statuses() -> list[RuleStatus]:
    """Every rule with how many of its alerts fire now and a one-word status."""
    rules = AlertRule.objects.annotate(
        firing=Count("alerts", filter=Q(alerts__state=Alert.State.FIRING))
    ).prefetch_related("channels")
    result = []
    for rule in rules:
        firing: int = rule.firing
        if not rule.enabled:
            status = "disabled"
        elif rule.last_error:
            status = "error"
        elif firing:
            status = "firing"
        elif rule.last_evaluated_at is None:
            status = "new"
        else:
            status = "ok"
        result.append(RuleStatus(rule=rule, firing=firing, status=status))
    return result
