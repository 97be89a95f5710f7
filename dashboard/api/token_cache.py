"""A short-lived, in-process cache of authenticated API tokens and their users.

Finding a bearer token costs a query (the token and its user) on every API request,
and a user without ``is_superuser`` costs two more for its permissions: together with
opening the request's database connection for them, more than a cheap API read itself.
:func:`dashboard.api.tokens.authenticate_token` keeps what a successful lookup found
here, keyed by the SHA-256 of the whole presented token (the plaintext is never kept),
for ``API_TOKEN_CACHE_TTL`` seconds (default 5; ``0`` turns the cache off).

What still holds on a hit:

- the token's expiry is checked on every use (the entry keeps ``expires_at``);
- ``last_used_at`` is still written once a minute;
- only tokens that passed the full check are cached; a wrong or unknown token always
  goes to the database and counts as a failed guess (``login_throttle``).

What ends an entry at once, in this process: any save or delete of a token, a user, a
group or a permission, and any change of a user's groups or permissions or a group's
permissions (Django's ``post_save``, ``post_delete``, ``m2m_changed``), which clear the
whole cache, again when the transaction that made the change commits. Changes that
send no signal (``QuerySet.update()``, raw SQL) and changes made by another process
(another server, ``manage.py`` in a shell) are seen when the entry expires: within
``API_TOKEN_CACHE_TTL`` seconds. That bound is the price of the cache.

Concurrency: one lock guards the entries and a generation number. A lookup that
misses reads the generation *before* it queries the database, and its result is only
stored if no change was signalled since. So a lookup racing a revocation (it read the
token before the revocation committed) cannot put the stale token back after the
clear: the clear on commit bumped the generation it carries. Each hit returns copies of
the token and user, so a request that changes its ``request.user`` changes no other
request's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.base import ModelState
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .models import ApiToken

__all__ = ["MAX_ENTRIES", "clear", "generation", "get", "put", "reset", "ttl"]

MAX_ENTRIES = 4096


@dataclass(slots=True)
class _Entry:
    token: ApiToken  # its user in the token's field cache, permissions precomputed
    expires: float  # on the cache's monotonic clock


_lock = threading.Lock()
_entries: dict[str, _Entry] = {}
_generation = 0
_clock: Callable[[], float] = time.monotonic


def ttl() -> float:
    """Seconds an entry lives (``API_TOKEN_CACHE_TTL``); 0 when caching is off."""
    return float(getattr(settings, "API_TOKEN_CACHE_TTL", 0.0) or 0.0)


def generation() -> int:
    """Read this before looking a token up in the database; pass it to :func:`put`."""
    return _generation


def get(key: str) -> ApiToken | None:
    """A copy of the token cached under ``key`` (and of its user), or None."""
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            return None
        if entry.expires <= _clock():
            del _entries[key]
            return None
    return _copy(entry.token)


def put(key: str, token: ApiToken, seen_generation: int) -> None:
    """Cache ``token`` (with ``token.user`` loaded) found after :func:`generation`."""
    lifetime = ttl()
    if lifetime <= 0:
        return
    user = token.user
    if not user.is_superuser:
        # Loads the ModelBackend's permission caches on this instance (two queries),
        # which the copies handed out share: has_perm then needs no query.
        user.get_all_permissions()
    with _lock:
        if seen_generation != _generation:
            return  # a change was signalled while the token was being read: stale
        if len(_entries) >= MAX_ENTRIES:
            _entries.pop(next(iter(_entries)))  # the oldest
        _entries[key] = _Entry(_copy(token), _clock() + lifetime)


def touch(key: str, last_used_at: Any) -> None:
    """Note on the cached entry that ``last_used_at`` was written."""
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            entry.token.last_used_at = last_used_at


def clear() -> None:
    """Forget every entry; lookups in flight will not store what they read."""
    global _generation
    with _lock:
        _entries.clear()
        _generation += 1


def reset(*, clock: Callable[[], float] | None = None) -> None:
    """Forget every entry (tests: inject a fake monotonic ``clock``)."""
    global _clock
    clear()
    _clock = clock or time.monotonic


def size() -> int:
    with _lock:
        return len(_entries)


def _copy_instance(instance: Any) -> Any:
    """A shallow copy of a model instance with a state of its own (no related cache)."""
    twin = instance.__class__.__new__(instance.__class__)
    twin.__dict__.update(instance.__dict__)
    state = ModelState()
    state.db, state.adding = instance._state.db, instance._state.adding
    twin._state = state
    return twin


def _copy(token: ApiToken) -> ApiToken:
    user = token.user
    twin: ApiToken = _copy_instance(token)
    twin._state.fields_cache["user"] = _copy_instance(user)
    return twin


def _changed(**kwargs: Any) -> None:
    clear()
    # A lookup may read the old rows until the change commits: clear again then (the
    # generation bump makes such a lookup drop what it read).
    using = kwargs.get("using")
    if using is not None and transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(clear, using=using)


User = get_user_model()
for _model in (ApiToken, User, Group, Permission):
    post_save.connect(_changed, sender=_model, dispatch_uid=f"token_cache.save.{_model.__name__}")
    post_delete.connect(
        _changed, sender=_model, dispatch_uid=f"token_cache.delete.{_model.__name__}"
    )
for _through in (
    User.groups.through,
    User.user_permissions.through,
    Group.permissions.through,
):
    m2m_changed.connect(_changed, sender=_through, dispatch_uid=f"token_cache.m2m.{_through}")


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "API_TOKEN_CACHE_TTL":
        clear()
