"""Error responses shared by every operation (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from . import throttle
from .schemas import ErrorOut, ValidationErrorOut

READ_ERRORS: dict[int, Any] = {
    401: ErrorOut,
    403: ErrorOut,
    422: ValidationErrorOut,
    429: ErrorOut,
}
LOOKUP_ERRORS: dict[int, Any] = {**READ_ERRORS, 404: ErrorOut}
#: Operations with a JSON body also answer 400 to a body that is not JSON.
BODY_ERRORS: dict[int, Any] = {**READ_ERRORS, 400: ErrorOut}
BODY_LOOKUP_ERRORS: dict[int, Any] = {**LOOKUP_ERRORS, 400: ErrorOut}


def field_error(source: str, field: str, message: str) -> ValidationError:
    """A 422 naming ``field`` the way ninja's own validation errors do.

    ``source`` is ``"query"``, ``"path"`` or ``"body"`` (body fields are reported
    under ``payload``, like ninja's).
    """
    loc = ["body", "payload", field] if source == "body" else [source, field]
    return ValidationError([{"type": "value_error", "loc": loc, "msg": message}])


def install_handlers(api: NinjaAPI) -> None:
    def rate_limited(request: HttpRequest, exc: throttle.RateLimited) -> HttpResponse:
        response = api.create_response(request, {"detail": str(exc)}, status=429)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        message = str(exc) if str(exc) != "Unauthorized" else "authentication required"
        response = api.create_response(
            request,
            {"detail": f"{message}: log in or send Authorization: Bearer <API token>"},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    api.add_exception_handler(throttle.RateLimited, rate_limited)  # type: ignore[arg-type]
    api.add_exception_handler(AuthenticationError, unauthenticated)  # type: ignore[arg-type]
