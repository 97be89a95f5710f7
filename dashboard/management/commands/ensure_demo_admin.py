"""Create the demo superuser when no superuser exists yet (used by `make run`)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser from DEMO_ADMIN_USER / DEMO_ADMIN_PASSWORD if none exists."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists already; nothing to do.")
            return
        username = settings.DEMO_ADMIN_USER
        password = settings.DEMO_ADMIN_PASSWORD
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            # Shown once: it is not stored anywhere in clear text.
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created demo superuser {username!r} with password {password!r}\n"
                    f"(set DEMO_ADMIN_PASSWORD to choose it; "
                    f"`manage.py changepassword {username}` to change it)."
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Created demo superuser {username!r}."))
