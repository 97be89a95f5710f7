"""Operator actions on the simulated world (writes; each one audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from dashboard import audit

from . import patterns, simulated

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

    The choice is stored (:mod:`.patterns`), so the ``run_agents`` workers apply it to
    their own services within about a second, and applied at once to this process's
    ``world`` (the server's, used by the workflow API and ``RESILIENCE_DEMO``).

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
    previous = patterns.apply_choice(world, name, choice)  # ValueError: unknown service
    now = world.pattern(name)
    actor = getattr(user, "username", "") or source
    with transaction.atomic():
        version = patterns.choose(service=name, choice=choice, actor=actor)
        audit.record(
            user=user,
            source=source,
            action="simulation.set_pattern",
            target=name,
            reason=reason,
            details={
                "choice": choice,
                "from": previous.describe(),
                "to": now.describe(),
                "version": version,
            },
        )
    return next(row for row in world.snapshot() if row["name"] == name)
