"""Operator actions on circuit breakers: each is audited and lands in the history.

The breaker publishes a BreakerStateChanged event carrying the actor and the reason,
which the recorder writes as a BreakerEvent row; the AuditEntry records the request.
"""

from __future__ import annotations

from typing import Any, Literal

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from dashboard import audit
from dashboard.permissions import OPERATE_BREAKER, RESET_BREAKER
from resilience.circuit_breaker import circuit_breaker_registry

Action = Literal["reset", "force_open", "disable"]

PERMISSIONS: dict[Action, str] = {
    "reset": RESET_BREAKER,
    "force_open": OPERATE_BREAKER,
    "disable": OPERATE_BREAKER,
}


class BreakerNotFound(LookupError):
    pass


def act_on_breaker(
    *,
    name: str,
    action: Action,
    user: AbstractBaseUser | AnonymousUser | None,
    reason: str = "",
    source: str,
) -> dict[str, Any]:
    """Apply ``action`` to the breaker ``name``; returns its snapshot afterwards.

    Raises:
        BreakerNotFound: no breaker of that name is registered in this process.
        ValueError: unknown action or a reason longer than MAX_REASON characters.
    """
    if action not in PERMISSIONS:
        raise ValueError(f"action must be one of {sorted(PERMISSIONS)}, got {action!r}")
    reason = reason.strip()
    if len(reason) > audit.MAX_REASON:
        raise ValueError(f"reason must be at most {audit.MAX_REASON} characters, got {len(reason)}")
    breaker = circuit_breaker_registry.get(name)
    if breaker is None:
        raise BreakerNotFound(name)
    actor = user.get_username() if isinstance(user, AbstractBaseUser) else "system"
    before = breaker.state.value
    getattr(breaker, action)(actor=actor, reason=reason or None)
    snapshot: dict[str, Any] = breaker.snapshot()
    audit.record(
        user=user,
        source=source,
        action=f"breaker.{action}",
        target=name,
        reason=reason,
        details={"from": before, "to": snapshot["state"]},
    )
    return snapshot
