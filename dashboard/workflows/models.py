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
