from __future__ import annotations

from django.db import models


class EdgeMinute(models.Model):
    """Calls from one service to another in one minute, through one breaker (or none).

    Filled incrementally by :func:`dashboard.servicemap.rollup.rollup`; the map sums
    these rows over its time range instead of joining spans.
    """

    minute = models.BigIntegerField(help_text="minutes since the epoch of the call's start")
    caller = models.CharField(max_length=255)
    callee = models.CharField(max_length=255)
    breaker = models.CharField(max_length=255, blank=True, default="")
    # "" for a parent/child pair; else the CLIENT span attribute that named the callee
    # (the callee reports no spans of its own, so the trace search filters on it).
    peer_key = models.CharField(max_length=64, blank=True, default="")
    calls = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    duration_sum_us = models.BigIntegerField(default=0)
    histogram = models.JSONField(default=dict, help_text="{bucket index: count}, log buckets")

    class Meta:
        verbose_name = "service map edge minute"
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "caller", "callee", "breaker", "peer_key"], name="edge_minute_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.caller} -> {self.callee} @{self.minute}"


class RollupWatermark(models.Model):
    """One row (pk=1): every span with ``id <= last_span_id`` is in the rollup."""

    last_span_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"spans <= {self.last_span_id}"
