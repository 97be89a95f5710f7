"""Create, verify and revoke API tokens (the plaintext is never stored)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from dashboard import audit
from dashboard.durations import parse_timedelta

from . import token_cache
from .models import ApiToken

TOKEN_PREFIX = "rdt_"
# rdt_<16 hex: lookup prefix>_<43 url-safe chars: 256-bit secret>
TOKEN_PATTERN = re.compile(r"rdt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough (no brute force possible).
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A fresh ``(plaintext, prefix, secret_hash)``."""
    prefix = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}{prefix}_{secret}", prefix, hash_secret(secret)


def fill_new_token(token: ApiToken) -> str:
    """Give an unsaved ``token`` its prefix and hash; returns the plaintext (show it once)."""
    plaintext, token.prefix, token.secret_hash = new_token()
    return plaintext


def create_token(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    actor: AbstractBaseUser | None = None,
    source: str = "command",
) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns it and its plaintext (not stored anywhere)."""
    token = ApiToken(user=user, name=name, expires_at=expires_at)
    plaintext = fill_new_token(token)
    with transaction.atomic():
        token.save()
        audit.record(
            user=actor,
            source=source,
            action="api_token.create",
            target=f"{token.prefix} ({name}) for {user.get_username()}",
            details={"expires_at": expires_at.isoformat() if expires_at else None},
        )
    return token, plaintext


def revoke_token(*, token: ApiToken, actor: AbstractBaseUser | None, source: str) -> None:
    """Revoke ``token`` now (idempotent) and audit it."""
    if token.revoked:
        return
    token.revoked, token.revoked_at = True, timezone.now()
    with transaction.atomic():
        token.save(update_fields=["revoked", "revoked_at"])
        audit.record(
            user=actor,
            source=source,
            action="api_token.revoke",
            target=f"{token.prefix} ({token.name}) for {token.user.get_username()}",
        )


def authenticate_token(plaintext: str) -> ApiToken | None:
    """The usable token matching ``plaintext`` (its user active), else None.

    A token found here is cached for ``API_TOKEN_CACHE_TTL`` seconds (see
    :mod:`.token_cache`: revocation and user or permission changes end that at once);
    what is returned is the caller's own copy, its user in ``token.user``.
    """
    text = plaintext.strip()
    match = TOKEN_PATTERN.fullmatch(text)
    if match is None:
        return None
    key = hash_secret(text)
    token = token_cache.get(key)
    if token is not None:
        if not token.usable or not token.user.is_active:  # expired since it was cached
            return None
        _record_use(token, key)
        return token
    seen = token_cache.generation()
    prefix, secret = match.groups()
    try:
        # get(), not first(): prefix is unique, and first()'s ORDER BY made compiling
        # this query about a third of the lookup's CPU.
        token = ApiToken.objects.select_related("user").get(prefix=prefix)
    except ApiToken.DoesNotExist:
        return None
    if not hmac.compare_digest(token.secret_hash, hash_secret(secret)):
        return None
    if not token.usable or not token.user.is_active:
        return None
    _record_use(token, None)
    token_cache.put(key, token, seen)
    return token


def _record_use(token: ApiToken, key: str | None) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        if key is not None:
            token_cache.touch(key, now)


def parse_expiry(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` or ``45s`` as a positive timedelta."""
    try:
        if not text.strip()[-1:].isalpha():
            raise ValueError("a unit is required")
        value = parse_timedelta(text)
    except ValueError:
        value = timedelta(0)
    if value <= timedelta(0):
        raise ValueError(f"expires must look like 30d, 12h, 2w, 90m or 45s, got {text!r}")
    return value
