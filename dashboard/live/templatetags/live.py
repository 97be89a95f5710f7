from __future__ import annotations

import hashlib
import re

from django import template

register = template.Library()

_UNSAFE = re.compile(r"[^a-z0-9]+")


@register.filter
def dom_id(name: str, prefix: str = "breaker") -> str:
    """A stable, valid HTML id for any breaker/limiter name (readable part + short hash)."""
    readable = _UNSAFE.sub("-", str(name).lower()).strip("-")[:40]
    digest = hashlib.blake2s(str(name).encode(), digest_size=4).hexdigest()
    return f"{prefix}-{readable}-{digest}" if readable else f"{prefix}-{digest}"


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"
