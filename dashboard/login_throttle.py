"""Throttle password and token guessing with the project's own keyed rate limiter.

``LOGIN_RATE_LIMIT`` is ``"<failures>/<seconds>"`` (default ``"10/300"``; ``""`` turns it
off): that many failed logins per username, and separately per client address, refill
over that many seconds. A successful login spends nothing. While a username's or an
address's budget is empty, the login form (``/accounts/login/`` and ``/admin/login/``)
and bearer-token authentication answer 429 with ``Retry-After``; every refusal is logged
and counted (``auth.login.throttled``).

The limiter comes from ``rate_limiter_registry.keyed_factory``: in cluster mode (Redis)
every server process shares the same buckets, so adding servers adds no guesses.
Keying by username means an attacker can lock a user out for ``<seconds>``; the
address key alone would let a botnet guess one password forever.

Concurrency: the limiter is built once, lazily, under ``_lock`` (like the API's
throttle); the limiter itself is thread-safe. Counting a failure happens on the thread
of the failing request, from Django's ``user_login_failed`` signal.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from dashboard.client_ip import client_address
from resilience import telemetry
from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, rate_limiter_registry

__all__ = ["LoginThrottleMiddleware", "blocked", "failed", "reset"]

logger = logging.getLogger(__name__)

NAME = "auth.login_failures"
DEFAULT_RATE = "10/300"
COUNTER = "auth.login.throttled"
LOGIN_VIEWS = frozenset({"login", "admin:login"})

_lock = threading.Lock()
_limiter: KeyedRateLimiter | None = None
_configured = False
_clock: Callable[[], float] = time.monotonic


def _parse(value: object) -> RateLimitConfig | None:
    if value is None or value == "":
        return None
    try:
        count, _, seconds = str(value).partition("/")
        return RateLimitConfig(max_requests=int(count), time_window=float(seconds))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"LOGIN_RATE_LIMIT must look like '10/300' (failures/seconds), got {value!r}"
        ) from exc


def limiter() -> KeyedRateLimiter | None:
    global _limiter, _configured
    with _lock:
        if not _configured:
            config = _parse(getattr(settings, "LOGIN_RATE_LIMIT", DEFAULT_RATE))
            _limiter = (
                None
                if config is None
                else rate_limiter_registry.keyed_factory(
                    config, name=NAME, clock=_clock, register=False
                )
            )
            _configured = True
        return _limiter


def reset(*, clock: Callable[[], float] | None = None) -> None:
    """Forget every bucket and re-read the setting (tests inject a fake ``clock``)."""
    global _limiter, _configured, _clock
    with _lock:
        _limiter, _configured = None, False
        _clock = clock or time.monotonic


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "LOGIN_RATE_LIMIT":
        reset(clock=_clock)


def _keys(username: str | None, address: str) -> list[str]:
    keys = [f"ip:{address}"]
    if username:
        # NFKC like Django's UsernameField: "ａｄａ" logs in as "ada", so shares its budget.
        name = unicodedata.normalize("NFKC", username).strip().lower()
        keys.append(f"user:{name[:150]}")
    return keys


def blocked(*, username: str | None, address: str, where: str) -> float | None:
    """Seconds to wait if ``username`` or ``address`` has no failure left, else None.

    A refusal is logged and counted here.
    """
    bucket = limiter()
    if bucket is None:
        return None
    waits = [bucket.retry_after(key) for key in _keys(username, address)]
    wait = max(waits)
    if wait <= 0:
        return None
    logger.warning(
        "%s throttled: too many failures for user %r / address %s; retry in %.0fs",
        where,
        username or "",
        address,
        wait,
    )
    telemetry.metrics.increment_counter(COUNTER, labels={"where": where})
    return wait


def failed(*, username: str | None, address: str) -> None:
    """Spend one failure of ``username``'s and ``address``'s budgets."""
    bucket = limiter()
    if bucket is None:
        return
    for key in _keys(username, address):
        bucket.try_acquire(key)


def too_many(wait: float) -> HttpResponse:
    response = HttpResponse(
        "Too many failed logins: try again later.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(max(math.ceil(wait), 1))
    return response


@receiver(user_login_failed)
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None:
        return  # not a web login (a management command, a test calling authenticate())
    failed(username=str(credentials.get("username") or ""), address=client_address(request))


class LoginThrottleMiddleware(MiddlewareMixin):
    """Answers 429 to a login POST while its username or address is throttled.

    A MiddlewareMixin, so it is async-capable: one sync-only middleware would turn every
    middleware outside it (whitenoise's static files included) synchronous under ASGI.
    """

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        match = request.resolver_match
        if request.method != "POST" or match is None or match.view_name not in LOGIN_VIEWS:
            return None
        wait = blocked(
            username=request.POST.get("username"),
            address=client_address(request),
            where=match.view_name,
        )
        return None if wait is None else too_many(wait)
