"""HTTP server metrics by route, in the shape Prometheus users expect (django-prometheus).

``http_server_requests_total{method,route,status}`` and
``http_server_request_duration_seconds{method,route,status}`` (histogram). ``route`` is
the URL pattern that matched (``/api/breakers/<name>``), never the path, so the label
set stays bounded; requests that match nothing are ``<unmatched>`` and unknown methods
``OTHER``. Static files answered by whitenoise (earlier in MIDDLEWARE) are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from resilience import telemetry

REQUESTS: Final = "http.server.requests"
DURATION: Final = "http.server.request.duration_seconds"
UNMATCHED: Final = "<unmatched>"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: HttpRequest) -> str:
    """The matched URL pattern, ``/``-prefixed, or ``<unmatched>``."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return "/" + str(match.route)


def record(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one finished request and its duration."""
    method = request.method if request.method in _METHODS else "OTHER"
    labels = {"method": str(method), "route": route_of(request), "status": str(status)}
    telemetry.metrics.increment_counter(REQUESTS, labels=labels)
    telemetry.metrics.record_histogram(DURATION, seconds, labels=labels)


class HttpMetricsMiddleware:
    """Times every request through the rest of the middleware and the view."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = cast(HttpResponseBase, self.get_response(request))
        record(request, response.status_code, time.perf_counter() - started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await cast(Awaitable[HttpResponseBase], self.get_response(request))
        record(request, response.status_code, time.perf_counter() - started)
        return response
