"""Operator actions on the simulated world (writes; each one audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from dashboard import audit

from . import simulated

CHOICES = ("default", *simulated.PRESETS)


def change_service_pattern(
    *,
    name: str,
    choice: str,
    user: AbstractBaseUser | AnonymousUser | None,
    reason: str = "",
    source: str = "dashboard",
    world: simulated.ServiceWorld | None = None,
) -> dict[str, Any]:
    """Give the fake service ``name`` the preset ``choice`` (``default``: its configured one).

    Returns:
        The service's row of :meth:`ServiceWorld.snapshot` after the change.

    Raises:
        ValueError: unknown service or choice, or a reason over 500 characters;
            nothing changed and nothing was audited.
    """
    world = world or simulated.world()
    reason = reason.strip()
    if len(reason) > audit.MAX_REASON:
        raise ValueError(f"reason must be at most {audit.MAX_REASON} characters, got {len(reason)}")
    if choice not in CHOICES:
        raise ValueError(f"pattern must be one of {', '.join(CHOICES)}, got {choice!r}")
    current = world.pattern(name)  # ValueError for an unknown service
    if choice == "default":
        previous = world.restore(name)
    else:
        previous = world.set_pattern(name, simulated.preset(choice, current))
    now = world.pattern(name)
    audit.record(
        user=user,
        source=source,
        action="simulation.set_pattern",
        target=name,
        reason=reason,
        details={"choice": choice, "from": previous.describe(), "to": now.describe()},
    )
    return next(row for row in world.snapshot() if row["name"] == name)
