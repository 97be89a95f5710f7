from __future__ import annotations

from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "dashboard.cluster"
    label = "cluster"
    verbose_name = "Cluster mode"
