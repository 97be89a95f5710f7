from __future__ import annotations

from django.db import models


class MetricSeries(models.Model):
    """One metric stream received over OTLP: (service, instance, metric, labels)."""

    service = models.CharField(max_length=255)
    instance = models.CharField(max_length=255, blank=True, default="")
    name = models.CharField(max_length=255)
    labels = models.JSONField(default=dict, blank=True)
    # sha256 of the labels' canonical JSON: a short, indexable identity for them.
    labels_key = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, help_text="gauge, counter, sum or histogram")
    unit = models.CharField(max_length=64, blank=True, default="")
    last_value = models.FloatField()
    last_us = models.BigIntegerField(help_text="latest point, µs since the epoch")

    class Meta:
        verbose_name = "metric series"
        verbose_name_plural = "metric series"
        constraints = [
            models.UniqueConstraint(
                fields=["service", "instance", "name", "labels_key"], name="metric_series_key"
            )
        ]
        indexes = [models.Index(fields=["last_us"], name="metric_series_last")]

    def __str__(self) -> str:
        return f"{self.service}/{self.instance} {self.name}"


class MetricPoint(models.Model):
    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="points")
    time_us = models.BigIntegerField(help_text="µs since the epoch")
    value = models.FloatField()

    class Meta:
        indexes = [
            models.Index(fields=["series", "time_us"], name="metric_point_series_time"),
            models.Index(fields=["time_us"], name="metric_point_time"),
        ]

    def __str__(self) -> str:
        return f"{self.series_id}@{self.time_us}={self.value}"
