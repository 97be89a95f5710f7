"""HTML fragments pushed over the sockets (htmx out-of-band swaps), one template each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from django.template.loader import render_to_string

from dashboard.breakers.models import BreakerEvent
from dashboard.breakers.services import PERMISSIONS
from dashboard.selectors import BreakerCard

PUSHED = (
    "_breaker_state.html",
    "_breaker_history.html",
    "_overview_chip.html",
    "_overview_summary.html",
    "_limiter_rows.html",
    "_sample.html",
)


def warm_up() -> None:
    """Compile the pushed templates and load the URLconf (their ``{% url %}`` tags).

    Done once off the event loop, so the first transition pushed by a process that has
    not served an HTTP request yet is not slowed by imports (~150 ms).
    """
    from django.template.loader import get_template
    from django.urls import reverse

    reverse("live:breakers")
    for template in PUSHED:
        get_template(f"dashboard/live/{template}")


def _render(template: str, context: Mapping[str, Any]) -> str:
    return render_to_string(f"dashboard/live/{template}", dict(context))


def to_json(value: Any) -> str:
    """Compact JSON for a data attribute (autoescaping in the template quotes it)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def breaker_state(card: BreakerCard, *, oob: bool = False) -> str:
    return _render("_breaker_state.html", {"b": card, "oob": oob})


def breaker_history(name: str, events: Iterable[BreakerEvent], *, oob: bool = True) -> str:
    return _render("_breaker_history.html", {"b": {"name": name, "history": events}, "oob": oob})


def actions_for(has_perm: Any) -> dict[str, bool]:
    """Which action buttons a user sees: ``{"reset": bool, "force_open": ..., ...}``."""
    return {action: bool(has_perm(perm)) for action, perm in PERMISSIONS.items()}


def breaker_added(card: BreakerCard, *, actions: Mapping[str, bool]) -> str:
    """A card for a breaker registered after the page was rendered, appended to the list."""
    return _render("_breaker_added.html", {"b": card, "actions": actions})


def action_result(*, ok: bool, message: str, card: BreakerCard | None = None) -> str:
    return _render("_action_result.html", {"ok": ok, "message": message, "b": card})


def breaker_cards(cards: Iterable[BreakerCard], *, actions: Mapping[str, bool]) -> str:
    """Every card, replacing the page's list (sent when a socket connects)."""
    return _render(
        "_breaker_cards.html", {"breakers": list(cards), "actions": actions, "oob": True}
    )


def overview_chip(breaker: BreakerCard | Mapping[str, Any], *, oob: bool = False) -> str:
    """A breaker's chip on the overview (a card, or a snapshot: it shows name and state)."""
    return _render("_overview_chip.html", {"b": breaker, "oob": oob})


def overview_summary(
    *,
    health: str,
    counts: list[tuple[str, int]],
    busiest: list[dict[str, Any]],
    limiter_count: int,
    oob: bool = True,
) -> str:
    return _render(
        "_overview_summary.html",
        {
            "health": health,
            "counts": counts,
            "busiest": busiest,
            "limiter_count": limiter_count,
            "oob": oob,
        },
    )


def limiter_rows(rows: Iterable[Mapping[str, Any]], *, oob: bool = True) -> str:
    return _render("_limiter_rows.html", {"limiters": list(rows), "oob": oob})


def sample(data: Mapping[str, Any]) -> str:
    """One metrics sample, for the charts (read by live.js after the swap)."""
    return _render("_sample.html", {"json": to_json(data), "t": data["t"]})


def sample_history(samples: Iterable[Mapping[str, Any]], *, oob: bool = True) -> str:
    """The samples kept so far, so charts start with the last minutes."""
    return _render("_sample_history.html", {"json": to_json(list(samples)), "oob": oob})
