"""The REST APIs (django-ninja): one router per resource in :mod:`.routers`, built here.

- ``api``: the observability API at ``/api/observability/`` (its schema at
  ``/api/observability/openapi.json``);
- ``workflows_api``: the workflow API at ``/api/workflows`` (its schema at
  ``/api/workflows/openapi.json``).

The two are separate ``NinjaAPI`` objects because they are separate public documents
under separate prefixes, and a ``NinjaAPI`` serves one schema under one prefix:
mounting the workflow router on ``api`` would move it to
``/api/observability/workflows`` and merge the two schemas. Both are built by
:func:`build_api`, so they share the parser, the error bodies, the docs guard and the
rate-limit headers; every operation authenticates, throttles and checks permissions
through :mod:`.auth` (``auth=require(...)``, or ``anyone()`` where anonymous callers
are allowed).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.parser import Parser
from ninja.types import DictStrAny

from dashboard.permissions import EXECUTE_WORKFLOW, VIEW_DASHBOARD

from . import throttle
from .auth import docs_guard
from .errors import install_handlers
from .routers import (
    alerts,
    breakers,
    checkpoints,
    fleet,
    health,
    limiters,
    metrics,
    servicemap,
    traces,
    workflows,
)


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


def build_api(**kwargs: Any) -> ObservabilityAPI:
    """A NinjaAPI with this project's parser, error handlers, docs guard and headers."""
    built = ObservabilityAPI(parser=LenientParser(), **kwargs)
    install_handlers(built)
    return built


api = build_api(
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
    docs_url="/docs",
    openapi_url="/openapi.json",
)
api.add_router("/traces", traces.router)
api.add_router("/metrics", metrics.router)
api.add_router("/checkpoints", checkpoints.router)
api.add_router("/circuit-breakers", breakers.router)
api.add_router("/rate-limiters", limiters.router)
api.add_router("/health", health.router)
api.add_router("/alerts", alerts.router)
api.add_router("/fleet", fleet.router)
api.add_router("/service-map", servicemap.router)

workflows_api = build_api(
    title="Resilience workflow API",
    version="1.0.0",
    description=(
        "Execute the simulated multi-agent workflow and follow its progress. Same "
        "authentication as the observability API (session with CSRF, or "
        f"`Authorization: Bearer <API token>`). Reads need `{VIEW_DASHBOARD}`; "
        f"executing needs `{EXECUTE_WORKFLOW}`."
    ),
    urls_namespace="workflows-api",
    docs_url="/workflows/docs",
    openapi_url="/workflows/openapi.json",
)
workflows_api.add_router("/workflows", workflows.router)
