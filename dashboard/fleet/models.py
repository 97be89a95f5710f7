"""The fleet as the dashboard knows it: instances (worker processes) and commands to them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class FleetInstance(models.Model):
    """One worker process that reports to the dashboard, with its latest snapshots."""

    instance_id = models.CharField(max_length=64, unique=True)
    service = models.CharField(max_length=100, db_index=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    version = models.CharField(max_length=50, blank=True, default="")
    language = models.CharField(max_length=30, blank=True, default="python")
    started_at = models.DateTimeField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    reports = models.PositiveBigIntegerField(default=0, help_text="reports received")
    last_seq = models.PositiveBigIntegerField(default=0)
    reports_failed = models.PositiveBigIntegerField(
        default=0, help_text="reports the worker could not deliver (its own count)"
    )
    events_dropped = models.PositiveBigIntegerField(
        default=0, help_text="transitions the worker dropped (its own count)"
    )
    breakers = models.JSONField(default=list, help_text="latest breaker snapshots")
    limiters = models.JSONField(default=list, help_text="latest limiter snapshots")
    transport = models.CharField(
        max_length=10, default="http", help_text="how its last report came: http or redis"
    )

    class Meta:
        ordering = ["service", "host", "pid"]
        permissions = [("report_fleet", "Can report as a fleet instance (worker process)")]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """``service@host:pid``: how history rows and pages name the instance."""
        return f"{self.service}@{self.host}:{self.pid}"


class CommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"


class FleetCommand(models.Model):
    """An operator action for one instance, delivered in the answer to its next report."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch = models.UUIDField(db_index=True, help_text="one operator action across instances")
    instance = models.ForeignKey(FleetInstance, on_delete=models.CASCADE, related_name="commands")
    target = models.CharField(max_length=200)
    action = models.CharField(max_length=20)
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=20, choices=CommandStatus.choices, default=CommandStatus.PENDING
    )
    created_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    result_state = models.CharField(max_length=20, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["instance", "status"], name="fleet_command_open"),
            models.Index(fields=["instance", "target", "-created_at"], name="fleet_command_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target} on {self.instance_id} ({self.status})"


class FleetCheckpoint(models.Model):
    """Who reported a checkpoint row through the fleet: its owner.

    A fleet token may add checkpoints to a workflow only while every row of that
    workflow was reported through the fleet by the same token user *and* service
    (``dashboard.fleet.checkpoints``). No database constraint and no cascade: deleting
    checkpoints (admin, retention) must count and behave as before; an owner row left
    behind is harmless (ownership is read through existing checkpoints) and is swept
    when a new instance appears.
    """

    checkpoint = models.OneToOneField(
        "checkpoints.Checkpoint",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="fleet_owner",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="the token's user (none through Redis, which has no token)",
    )
    service = models.CharField(max_length=100)
    instance_id = models.CharField(max_length=64)
    transport = models.CharField(max_length=10, default="http")
    recorded_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.checkpoint_id} by {self.service} ({self.instance_id})"
