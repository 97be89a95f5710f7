from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """Who changed what, when and why — one row per mutation from any surface."""

    class Source(models.TextChoices):
        API = "api", "API"
        DASHBOARD = "dashboard", "Dashboard"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "Management command"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor = models.CharField(max_length=150, help_text="username at the time (kept if deleted)")
    source = models.CharField(max_length=20, choices=Source.choices)
    action = models.CharField(max_length=100, db_index=True, help_text="e.g. breaker.reset")
    target = models.CharField(max_length=300, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        permissions = [
            ("view_dashboard", "Can view the dashboard pages and read the API"),
            ("reset_metrics", "Can reset metrics"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"
