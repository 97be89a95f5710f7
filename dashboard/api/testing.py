"""Helpers for tests of the API (and of projects using it): users, tokens, headers."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import Permission, User

from .tokens import create_token


def make_user(username: str, *permissions: str, password: str | None = None) -> User:
    """A user holding ``permissions`` (``"app_label.codename"``).

    Without a ``password`` the user has an unusable one (no slow hashing): log in
    with ``client.force_login`` or use :func:`token_for`.
    """
    user = User.objects.create_user(username, password=password)
    for permission in permissions:
        app_label, codename = permission.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def token_for(user: User, *, name: str = "tests", expires_at: datetime | None = None) -> str:
    """A new API token's plaintext for ``user``."""
    return create_token(user=user, name=name, expires_at=expires_at)[1]


def bearer(token: str) -> dict[str, str]:
    """Test-client keyword arguments sending ``token`` (``client.get(url, **bearer(t))``)."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
