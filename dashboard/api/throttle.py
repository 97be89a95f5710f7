"""Per user / per token rate limiting of the API with resilience's KeyedRateLimiter.

``API_RATE_LIMIT`` is ``"<requests>/<seconds>"`` (default ``"120/60"``), or ``None``
/ ``""`` to switch limiting off. Every limited response carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset``; a refusal is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest

from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig

DEFAULT_RATE = "120/60"
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9}(?:\.\d+)?)\s*")
HEADERS_ATTR = "_api_ratelimit_headers"

_lock = threading.Lock()
_limiter: KeyedRateLimiter | None = None
_configured = False
_clock: Callable[[], float] = time.monotonic


class RateLimited(Exception):
    """The caller spent its budget; the handler answers 429 with these headers."""

    def __init__(self, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(f"rate limit exceeded; retry in {math.ceil(retry_after)}s")
        self.retry_after = retry_after
        self.headers = headers


def parse_rate(value: object) -> RateLimitConfig | None:
    """``"120/60"`` → 120 requests per 60 seconds; ``None``/``""`` → no limit."""
    if value is None or value == "":
        return None
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ImproperlyConfigured(
            f"API_RATE_LIMIT must look like '120/60' (requests/seconds), got {value!r}"
        )
    try:
        return RateLimitConfig(max_requests=int(match[1]), time_window=float(match[2]))
    except ValueError as exc:
        raise ImproperlyConfigured(f"API_RATE_LIMIT: {exc}") from exc


def limiter() -> KeyedRateLimiter | None:
    """The API's limiter, built from ``API_RATE_LIMIT`` on first use."""
    global _limiter, _configured
    with _lock:
        if not _configured:
            config = parse_rate(getattr(settings, "API_RATE_LIMIT", DEFAULT_RATE))
            _limiter = (
                None
                if config is None
                else KeyedRateLimiter(config, name="api", clock=_clock, register=False)
            )
            _configured = True
        return _limiter


def reset(*, clock: Callable[[], float] | None = None) -> None:
    """Forget every bucket and re-read the setting (tests: inject a fake ``clock``)."""
    global _limiter, _configured, _clock
    with _lock:
        _limiter, _configured = None, False
        _clock = clock or time.monotonic


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "API_RATE_LIMIT":
        reset(clock=_clock)


def _headers(bucket: KeyedRateLimiter, key: str) -> dict[str, str]:
    config = bucket.config
    level = bucket.available_tokens(key)
    until_full = max(config.capacity - level, 0.0) / config.rate
    return {
        "RateLimit-Limit": str(config.capacity),
        "RateLimit-Remaining": str(max(math.floor(level), 0)),
        "RateLimit-Reset": str(math.ceil(until_full)),
    }


def check(request: HttpRequest, key: str) -> None:
    """Spend one request of ``key``'s budget or raise :class:`RateLimited`.

    Remembers the headers on ``request`` so every response (errors too) carries them.
    """
    bucket = limiter()
    if bucket is None:
        return
    allowed = bucket.try_acquire(key)
    headers = _headers(bucket, key)
    setattr(request, HEADERS_ATTR, headers)
    if not allowed:
        wait = bucket.retry_after(key)
        raise RateLimited(wait, {**headers, "Retry-After": str(max(math.ceil(wait), 1))})


def headers_for(request: HttpRequest) -> dict[str, str]:
    headers: dict[str, str] = getattr(request, HEADERS_ATTR, {})
    return headers
