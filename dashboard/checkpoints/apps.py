from __future__ import annotations

from django.apps import AppConfig


class CheckpointsConfig(AppConfig):
    name = "dashboard.checkpoints"
    label = "checkpoints"
    verbose_name = "Checkpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Receivers only; dashboard.runtime makes the Django-backed manager the process's
        # default `resilience.checkpoint.checkpoint_manager` when it starts.
        from . import store

        store.connect_signals()
