"""``manage.py create_api_token <username> [--name NAME] [--expires 30d]``.

Prints the token once; only its hash is stored.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dashboard.api.tokens import create_token, parse_expiry


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (it is stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")
        parser.add_argument(
            "--expires", default="", help="lifetime such as 30d, 12h or 2w (default: never)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        name = options["name"].strip()
        if not name or len(name) > 100:
            raise CommandError("--name must be 1-100 characters")
        expires_at = None
        if options["expires"]:
            try:
                expires_at = timezone.now() + parse_expiry(options["expires"])
            except (ValueError, OverflowError) as exc:
                raise CommandError(str(exc)) from exc
        token, plaintext = create_token(user=user, name=name, expires_at=expires_at)
        when = f"expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "does not expire"
        self.stderr.write(
            f"Created token {token.name!r} ({token.prefix}) for {user.get_username()}; it {when}."
            " Copy it now, it is not shown again:"
        )
        self.stdout.write(plaintext)
