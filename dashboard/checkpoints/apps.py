from __future__ import annotations

from django.apps import AppConfig


class CheckpointsConfig(AppConfig):
    name = "dashboard.checkpoints"
    label = "checkpoints"
    verbose_name = "Checkpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Builds the Django-backed manager (no database or storage access) and makes it
        # the default `resilience.checkpoint.checkpoint_manager` of this process.
        from . import store

        store.connect_signals()
        store.install()
