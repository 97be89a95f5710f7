"""The observability REST API (django-ninja), mounted at ``/api/observability/``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.parser import Parser
from ninja.types import DictStrAny

from dashboard.alerts.api import router as alerts_router
from dashboard.fleet.api import router as fleet_router
from dashboard.permissions import VIEW_DASHBOARD

from . import throttle
from .auth import docs_guard
from .errors import install_handlers
from .routers import breakers, checkpoints, health, limiters, metrics, servicemap, traces


class LenientParser(Parser):
    """JSON bodies, plus form-encoded ones (``curl -d reason=...``, an empty form post)."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return request.POST.dict()
        if not request.body.strip():
            return {}
        return super().parse_body(request)


class ObservabilityAPI(NinjaAPI):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("docs_decorator", docs_guard)
        super().__init__(**kwargs)

    def create_response(
        self,
        request: HttpRequest,
        data: Any,
        *,
        status: int | None = None,
        temporal_response: HttpResponse | None = None,
    ) -> HttpResponse:
        response = super().create_response(
            request, data, status=status, temporal_response=temporal_response
        )
        # RateLimit-* on every answer to a limited caller, errors included.
        for name, value in throttle.headers_for(request).items():
            response[name] = value
        return response


api = ObservabilityAPI(
    title="Resilience observability API",
    version="1.0.0",
    description=(
        "Circuit breakers, rate limiters, metrics, traces, checkpoints and health. "
        "Authenticate with the browser session (CSRF token on mutations) or "
        "`Authorization: Bearer <API token>` (created in the admin or with "
        f"`manage.py create_api_token`). Reads need `{VIEW_DASHBOARD}`; each "
        "mutation its own permission. Rate limited per user/token: see the "
        "`RateLimit-*` response headers."
    ),
    urls_namespace="observability-api",
    parser=LenientParser(),
    docs_url="/docs",
    openapi_url="/openapi.json",
)
install_handlers(api)
api.add_router("/traces", traces.router)
api.add_router("/metrics", metrics.router)
api.add_router("/checkpoints", checkpoints.router)
api.add_router("/circuit-breakers", breakers.router)
api.add_router("/rate-limiters", limiters.router)
api.add_router("/health", health.router)
api.add_router("/alerts", alerts_router)
api.add_router("/fleet", fleet_router)
api.add_router("/service-map", servicemap.router)
