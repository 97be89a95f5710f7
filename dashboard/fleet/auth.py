"""Who may report: the fleet endpoints' bearer-token check, with a short-lived cache.

Every instance reports about once a second, so checking its token against the database
each time (the token row, its user, the user's permissions: three queries) was a third
of a report's cost. A token that passed is remembered for :data:`TTL` seconds, keyed by
a SHA-256 of the whole token (the plaintext is not kept).

Revocation is honoured: revoking or deleting a token, deactivating or deleting a user, or
changing any user's or group's permissions clears this process's cache at once (model
signals), so the next report is checked against the database again. Another server
process (cluster mode) honours the change within :data:`TTL` seconds at most, and a
token's own expiry is honoured to the second (an entry never outlives it).

Concurrency: the cache is a dict guarded by a lock, read and written from the request
threads and cleared from whatever thread saved the model.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from dashboard.api.models import ApiToken
from dashboard.api.tokens import authenticate_token
from dashboard.permissions import REPORT_FLEET

TTL = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Reporter:
    """The token's user (its primary key and name) that may report."""

    user_id: Any
    username: str
    token_prefix: str


_lock = threading.Lock()
_cache: dict[str, tuple[float, Reporter]] = {}
clock: Callable[[], float] = time.monotonic


def clear() -> None:
    """Forget every cached token (the next request of each is checked in the database)."""
    with _lock:
        _cache.clear()


def error(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fleet"'
    return response


def _lookup(token: str) -> tuple[Reporter, float] | JsonResponse:
    """The reporter and the seconds its token stays valid, else the error to answer."""
    found = authenticate_token(token)
    if found is None:
        return error(401, "invalid, expired or revoked API token")
    if not found.user.has_perm(REPORT_FLEET):
        return error(403, f"permission {REPORT_FLEET!r} required")
    expires = found.expires_at
    left = math.inf if expires is None else (expires - timezone.now()).total_seconds()
    return Reporter(found.user.pk, found.user.get_username(), found.prefix), left


def authorise(request: HttpRequest) -> Reporter | JsonResponse:
    """The reporter behind the request's bearer token, else the 401/403 to answer.

    A browser session is never enough here (403): the fleet endpoints take a token only.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        status = 403 if request.user.is_authenticated else 401
        return error(status, f"send Authorization: Bearer <API token with {REPORT_FLEET!r}>")
    key = hashlib.sha256(token.encode()).hexdigest()
    now = clock()
    with _lock:
        cached = _cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    found = _lookup(token)
    if isinstance(found, JsonResponse):
        return found
    reporter, left = found
    with _lock:
        if len(_cache) >= MAX_ENTRIES:
            _cache.clear()
        _cache[key] = (now + min(TTL, left), reporter)
    return reporter


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
@receiver(post_save, sender=get_user_model())
@receiver(post_delete, sender=get_user_model())
@receiver(post_delete, sender=Group)
@receiver(post_delete, sender=Permission)
def _forget_on_change(sender: Any, **kwargs: Any) -> None:
    clear()


@receiver(m2m_changed)
def _forget_on_permission_change(sender: Any, **kwargs: Any) -> None:
    # user.user_permissions, user.groups, group.permissions: any of them may take the
    # permission away (the sender is the through model, so no narrower filter).
    clear()
