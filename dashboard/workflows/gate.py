"""The per-caller limit on workflow executions, shared by the API and the load generator.

``WORKFLOW_EXECUTE_RATE`` is ``"<requests>/<seconds>[+<burst>]"`` (default ``"10/60"``, the
seed's 10 per minute). The limiter is the registry's ``workflows.execute``, so the
dashboard shows its rejections.
"""

from __future__ import annotations

import math
import re

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, rate_limiter_registry

NAME = "workflows.execute"
DEFAULT_RATE = "10/60"
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9}(?:\.\d+)?)\s*(?:\+\s*(\d{1,9})\s*)?")


def parse_rate(value: object) -> RateLimitConfig:
    """``"10/60"`` -> 10 per 60 s; ``"10/60+5"`` adds a burst of 5."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ImproperlyConfigured(
            f"WORKFLOW_EXECUTE_RATE must look like '10/60' or '10/60+5', got {value!r}"
        )
    try:
        return RateLimitConfig(
            max_requests=int(match[1]),
            time_window=float(match[2]),
            burst_size=int(match[3] or 0),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"WORKFLOW_EXECUTE_RATE: {exc}") from exc


def limiter() -> KeyedRateLimiter:
    """The ``workflows.execute`` limiter, created from the setting on first use."""
    existing = rate_limiter_registry.get(NAME)
    if isinstance(existing, KeyedRateLimiter):
        return existing
    config = parse_rate(getattr(settings, "WORKFLOW_EXECUTE_RATE", DEFAULT_RATE))
    created = rate_limiter_registry.setdefault(
        NAME, lambda: KeyedRateLimiter(config, name=NAME, register=False)
    )
    if not isinstance(created, KeyedRateLimiter):
        raise ImproperlyConfigured(f"rate limiter {NAME!r} is registered but not keyed")
    return created


def admit(caller: str) -> float | None:
    """Spend one execution of ``caller``'s budget: None if admitted, else seconds to wait."""
    bucket = limiter()
    if bucket.try_acquire(caller):
        return None
    return max(bucket.retry_after(caller), 0.001)


def headers(caller: str, retry_after: float | None = None) -> dict[str, str]:
    """``RateLimit-*`` headers of ``caller``'s execution budget (and ``Retry-After``)."""
    bucket = limiter()
    config = bucket.config
    level = bucket.available_tokens(caller)
    result = {
        "RateLimit-Limit": str(config.capacity),
        "RateLimit-Remaining": str(max(math.floor(level), 0)),
        "RateLimit-Reset": str(math.ceil(max(config.capacity - level, 0.0) / config.rate)),
    }
    if retry_after is not None:
        result["Retry-After"] = str(max(math.ceil(retry_after), 1))
    return result
