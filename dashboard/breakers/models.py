from __future__ import annotations

from django.db import models

from resilience.circuit_breaker import CircuitState


class BreakerState(models.TextChoices):
    CLOSED = CircuitState.CLOSED.value, "Closed"
    OPEN = CircuitState.OPEN.value, "Open"
    HALF_OPEN = CircuitState.HALF_OPEN.value, "Half-open"
    FORCED_OPEN = CircuitState.FORCED_OPEN.value, "Forced open"
    DISABLED = CircuitState.DISABLED.value, "Disabled"


class BreakerEvent(models.Model):
    """One transition of one circuit breaker, as it happened."""

    breaker = models.CharField(max_length=200, db_index=True)
    from_state = models.CharField(max_length=20, choices=BreakerState.choices)
    to_state = models.CharField(max_length=20, choices=BreakerState.choices)
    reason = models.CharField(max_length=500)
    failure_count = models.PositiveIntegerField(default=0)
    failure_rate = models.FloatField(null=True, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    process = models.CharField(max_length=200, help_text="host:pid of the process")
    actor = models.CharField(
        max_length=150, blank=True, default="", help_text="user of a manual action"
    )
    note = models.TextField(blank=True, default="", help_text="reason given for a manual action")

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["breaker", "-occurred_at"], name="breaker_recent"),
            models.Index(fields=["to_state", "-occurred_at"], name="breaker_state_recent"),
        ]
        permissions = [
            ("reset_breaker", "Can reset circuit breakers"),
            ("operate_breaker", "Can force circuit breakers open or disable them"),
        ]

    def __str__(self) -> str:
        return f"{self.breaker}: {self.from_state} → {self.to_state}"

    @property
    def manual(self) -> bool:
        return bool(self.actor)
