"""dashboard/middleware.py: the cached CSP header is django-csp's own, override or not."""

from __future__ import annotations

from typing import Any

import pytest
from csp.constants import HEADER, HEADER_REPORT_ONLY, NONCE, SELF
from csp.middleware import CSPMiddleware as StockCSPMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from dashboard.middleware import CSPMiddleware

REPORT_ONLY = {"DIRECTIVES": {"default-src": [SELF], "report-uri": "/csp-report"}}


def headers(middleware_class: type[Any], path: str = "/api/x", **attrs: Any) -> dict[str, str]:
    def view(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("ok")
        for name, value in attrs.items():
            if name == "use_nonce":
                str(request.csp_nonce)  # type: ignore[attr-defined]
            else:
                setattr(response, name, value)
        return response

    middleware = middleware_class(view)
    response = middleware(RequestFactory().get(path))
    return {k: v for k, v in response.items() if k in (HEADER, HEADER_REPORT_ONLY)}


def test_the_header_is_django_csps_and_built_once() -> None:
    cached = CSPMiddleware(lambda request: HttpResponse())
    expected = headers(StockCSPMiddleware)
    assert "default-src 'self'" in expected[HEADER]
    assert headers(CSPMiddleware) == expected
    cached(RequestFactory().get("/"))
    first = cached._built
    cached(RequestFactory().get("/"))
    assert cached._built is first


@pytest.mark.parametrize(
    "attrs",
    [
        {"_csp_exempt": True},
        {"_csp_update": {"img-src": ["data:"]}},
        {"_csp_replace": {"script-src": ["https://cdn.example"]}},
        {"_csp_config": {"default-src": ["'none'"]}},
        {"use_nonce": True},
    ],
    ids=["exempt", "update", "replace", "override", "nonce"],
)
def test_per_response_overrides_and_nonces_are_django_csps(attrs: dict[str, Any]) -> None:
    with override_settings(
        CONTENT_SECURITY_POLICY={"DIRECTIVES": {"default-src": [SELF], "script-src": [SELF, NONCE]}}
    ):
        ours, stock = headers(CSPMiddleware, **attrs), headers(StockCSPMiddleware, **attrs)
    if "use_nonce" in attrs:  # a fresh nonce each: same policy around it
        assert "'nonce-" in ours[HEADER] and "'nonce-" in stock[HEADER]
        assert ours[HEADER].split("'nonce-")[0] == stock[HEADER].split("'nonce-")[0]
    else:
        assert ours == stock


def test_changed_settings_report_only_and_excluded_prefixes_are_followed() -> None:
    with override_settings(CONTENT_SECURITY_POLICY_REPORT_ONLY=REPORT_ONLY):
        ours = headers(CSPMiddleware)
        assert ours == headers(StockCSPMiddleware)
        assert "report-uri /csp-report" in ours[HEADER_REPORT_ONLY]
    policy = {"EXCLUDE_URL_PREFIXES": ["/api/"], "DIRECTIVES": {"default-src": [SELF]}}
    with override_settings(CONTENT_SECURITY_POLICY=policy):
        assert headers(CSPMiddleware) == headers(StockCSPMiddleware) == {}
        assert HEADER in headers(CSPMiddleware, path="/page/")
