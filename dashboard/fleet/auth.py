"""Who may report: the fleet endpoints' bearer-token check.

Every instance reports about once a second. The token lookup goes through
:func:`dashboard.api.tokens.authenticate_token`, whose cache (``API_TOKEN_CACHE_TTL``,
:mod:`dashboard.api.token_cache`) keeps a token that passed, with its user's permissions
precomputed: a report's check costs no query. Revoking or deleting a token, deactivating
or deleting a user, or changing permissions clears that cache at once in this process;
another server process honours the change within the TTL, and a token's expiry is checked
at every use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse

from dashboard.api.tokens import authenticate_token
from dashboard.permissions import REPORT_FLEET


@dataclass(frozen=True, slots=True)
class Reporter:
    """The token's user (its primary key and name) that may report."""

    user_id: Any
    username: str
    token_prefix: str


def error(status: int, detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fleet"'
    return response


def authorise(request: HttpRequest) -> Reporter | JsonResponse:
    """The reporter behind the request's bearer token, else the 401/403 to answer.

    A browser session is never enough here (403): the fleet endpoints take a token only.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        status = 403 if request.user.is_authenticated else 401
        return error(status, f"send Authorization: Bearer <API token with {REPORT_FLEET!r}>")
    found = authenticate_token(token)
    if found is None:
        return error(401, "invalid, expired or revoked API token")
    if not found.user.has_perm(REPORT_FLEET):
        return error(403, f"permission {REPORT_FLEET!r} required")
    return Reporter(found.user.pk, found.user.get_username(), found.prefix)
