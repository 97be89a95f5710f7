from __future__ import annotations

from django.apps import AppConfig


class CheckpointsConfig(AppConfig):
    name = "dashboard.checkpoints"
    label = "checkpoints"
    verbose_name = "Checkpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Receivers, and the Django-backed manager as the process's default
        # `resilience.checkpoint.checkpoint_manager`: an object built, nothing run (no
        # database or storage access, no thread). So a Django-configured worker
        # (`manage.py shell`, Celery after django.setup()) saves through the database store
        # without starting the dashboard's runtime (README "Checkpoints from workers").
        from . import store

        store.connect_signals()
        store.install()
