from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    DEGRADED = "degraded", "Succeeded with fallbacks"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted (process died)"


class WorkflowRun(models.Model):
    """One execution of a workflow; a resumed workflow has several runs."""

    workflow_id = models.CharField(max_length=128)
    caller = models.CharField(max_length=150, blank=True, default="")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.RUNNING)
    step = models.PositiveIntegerField(default=0, help_text="steps completed")
    total_steps = models.PositiveIntegerField(default=0)
    start_step = models.PositiveIntegerField(default=0, help_text="step this run started at")
    agent = models.CharField(max_length=50, blank=True, default="")
    resumed_from = models.CharField(max_length=40, blank=True, default="")
    last_checkpoint_id = models.CharField(max_length=40, blank=True, default="")
    trace_id = models.CharField(max_length=32, blank=True, default="")
    outcome = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    process = models.CharField(max_length=200, blank=True, default="", help_text="host:pid")
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["workflow_id", "-started_at"], name="run_workflow_started"),
            models.Index(fields=["-started_at"], name="run_started"),
            models.Index(fields=["status", "-started_at"], name="run_status_started"),
        ]
        permissions = [
            ("execute_workflow", "Can execute workflows through the API"),
            ("operate_simulation", "Can change the simulated services' failure patterns"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} #{self.pk} {self.status} {self.step}/{self.total_steps}"

    @property
    def finished(self) -> bool:
        return self.status != RunStatus.RUNNING


class ServicePattern(models.Model):
    """The failure pattern an operator chose for a simulated service (Simulation page).

    Every process running the simulated services (the ``run_agents`` workers, and the
    server's own in-process world) applies it; ``version`` grows with each change so a
    worker applies a change once and says so in :class:`PatternApplied`.
    """

    service = models.CharField(max_length=100, unique=True)
    choice = models.CharField(max_length=20, help_text="a preset name, or 'default'")
    version = models.PositiveBigIntegerField(default=1)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["service"]

    def __str__(self) -> str:
        return f"{self.service}: {self.choice} (v{self.version})"


class PatternApplied(models.Model):
    """A worker's acknowledgement: it applies ``version`` of ``service``'s pattern."""

    instance = models.CharField(max_length=64, help_text="fleet instance id of the worker")
    label = models.CharField(max_length=200, help_text="service@host:pid of the worker")
    service = models.CharField(max_length=100)
    version = models.PositiveBigIntegerField()
    applied_at = models.DateTimeField()

    class Meta:
        ordering = ["service", "label"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "service"], name="pattern_applied_once")
        ]

    def __str__(self) -> str:
        return f"{self.label} applies {self.service} v{self.version}"
