"""Record mutations in the audit trail (AuditEntry)."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from dashboard.models import AuditEntry

# The longest reason an operator may give for an action (forms, API bodies, services).
MAX_REASON = 500


def record(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    source: str,
    action: str,
    target: str = "",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one audit row; ``user`` may be None for system actions."""
    real_user = user if isinstance(user, AbstractBaseUser) else None
    actor = real_user.get_username() if real_user is not None else "system"
    return AuditEntry.objects.create(
        user=cast(Any, real_user),  # AUTH_USER_MODEL, whichever it is
        actor=actor,
        source=source,
        action=action,
        target=target[:300],
        reason=reason,
        details=details or {},
    )
