"""API authentication: bearer tokens or the browser session (CSRF on mutations).

Each operation gets ``auth=require("<app.permission>")`` (or ``auth=anyone()`` where
anonymous callers are welcome, ``/health``). The checks run in this order: who is
calling (401 if nobody), their rate limit (429), then the permission (403), so a
caller hammering an endpoint it may not use is still limited.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from dashboard import login_throttle
from dashboard.client_ip import client_address
from dashboard.permissions import VIEW_DASHBOARD

from . import throttle
from .models import ApiToken
from .tokens import TOKEN_PATTERN, authenticate_token


class InvalidToken(AuthenticationError):
    def __init__(self) -> None:
        super().__init__(message="invalid, expired or revoked API token")


def _permit(request: HttpRequest, user: Any, key: str, permission: str | None) -> Any:
    throttle.check(request, key)
    if permission is None:
        return user
    # Every operation needs the view permission, mutations their own on top: a user
    # holding only `reset_metrics` must not act on a dashboard they may not see.
    for needed in dict.fromkeys((VIEW_DASHBOARD, permission)):
        if not user.has_perm(needed):
            raise AuthorizationError(message=f"permission {needed!r} required")
    return user


def token_user(request: HttpRequest, token: str) -> User:
    """The user of bearer ``token`` (also set as ``request.user``); raises 401 if invalid."""
    # Guessing tokens is throttled like guessing passwords: per address, and per token
    # prefix (the public half) when the value looks like a token.
    address = client_address(request)
    match = TOKEN_PATTERN.fullmatch(token.strip())
    prefix = f"token:{match[1]}" if match else None
    wait = login_throttle.blocked(username=prefix, address=address, where="api_token")
    if wait is not None:
        raise throttle.RateLimited(wait, {"Retry-After": str(max(math.ceil(wait), 1))})
    found: ApiToken | None = authenticate_token(token)
    if found is None:
        login_throttle.failed(username=prefix, address=address)
        raise InvalidToken()
    request.user = found.user
    request.api_token = found  # type: ignore[attr-defined]
    return found.user


class TokenAuth(HttpBearer):
    """``Authorization: Bearer rdt_...`` (an ApiToken)."""

    def __init__(self, permission: str | None) -> None:
        self.permission = permission
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = token_user(request, token)
        return _permit(request, user, f"token:{request.api_token.pk}", self.permission)  # type: ignore[attr-defined]


class SessionAuth(APIKeyCookie):
    """The logged-in browser session; unsafe methods must pass Django's CSRF check.

    Unlike ninja's ``django_auth``, an anonymous caller gets 401 (not a CSRF 403).
    """

    def __init__(self, permission: str | None) -> None:
        self.permission = permission
        # Read when the API is built, not when this module is imported: the schema
        # names the cookie of the settings in force (override_settings included).
        self.param_name = settings.SESSION_COOKIE_NAME
        super().__init__(csrf=True)

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(settings.SESSION_COOKIE_NAME)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            return None
        if check_csrf(request) is not None:
            raise HttpError(
                403, "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken"
            )
        return _permit(request, user, f"user:{user.pk}", self.permission)


def require(permission: str | None = VIEW_DASHBOARD) -> list[Any]:
    """Auth for an operation: a token or a session, whose user has ``permission``."""
    return [TokenAuth(permission), SessionAuth(permission)]


def optional_user(request: HttpRequest) -> User | AnonymousUser:
    """The caller for endpoints open to anonymous callers (``/health``).

    A bearer token that is presented but invalid is still a 401: a client that meant
    to authenticate should learn that it did not.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if header and scheme.lower() == "bearer":
        return token_user(request, credentials)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active:
        return user  # type: ignore[no-any-return]
    return AnonymousUser()


class Anyone:
    """Auth that admits anonymous callers, still identifying and throttling everyone.

    The caller is :func:`optional_user` (a presented but invalid token is a 401), and
    is rate limited under :func:`caller_key` (anonymous callers per address). The
    handler finds the caller in ``request.auth`` and decides what to show them.

    Deliberately not a ninja security scheme: the OpenAPI schema must not claim that
    credentials are required.
    """

    def __call__(self, request: HttpRequest) -> User | AnonymousUser:
        user = optional_user(request)
        throttle.check(request, caller_key(request, user))
        return user  # AnonymousUser is truthy: ninja accepts it as authenticated


def anyone() -> list[Any]:
    """Auth for an operation open to anonymous callers (see :class:`Anyone`)."""
    return [Anyone()]


def caller_key(request: HttpRequest, user: User | AnonymousUser) -> str:
    token = getattr(request, "api_token", None)
    if token is not None:
        return f"token:{token.pk}"
    if user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_address(request)}"


def docs_guard(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The OpenAPI schema and Swagger UI need what a read needs (a login or a token, and
    ``dashboard.view_dashboard``) unless ``API_DOCS_PUBLIC`` is set: the schema maps
    every operation an attacker could try."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        if getattr(settings, "API_DOCS_PUBLIC", False):
            return view(request, *args, **kwargs)
        try:
            user = optional_user(request)
        except InvalidToken:
            return JsonResponse({"detail": "invalid, expired or revoked API token"}, status=401)
        except throttle.RateLimited as exc:
            response = JsonResponse({"detail": str(exc)}, status=429)
            response["Retry-After"] = exc.headers["Retry-After"]
            return response
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user.has_perm(VIEW_DASHBOARD):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return guarded
