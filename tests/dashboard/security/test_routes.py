"""Every route proves its guard: a new URL, API operation or socket without one fails here.

The test walks Django's URL resolver (which includes every ninja operation, with its
methods) and the websocket routes, and checks each the same way:

- an anonymous caller is refused (302 to the login page, 401, 403, or socket closed);
- a logged-in user without ``dashboard.view_dashboard`` gets 403 (socket closed);
- every state-changing method sent by a session without the CSRF token gets 403,
  even from a superuser;
- every state-changing method from a user holding only ``dashboard.view_dashboard``
  (no permission of its own) gets 403.

405 (the method does not exist there) always counts as refused. A route that is public
on purpose is named in ``PUBLIC`` with its reason, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.api import testing, throttle
from dashboard.permissions import VIEW_DASHBOARD
from dashboard.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC: dict[str, str] = {
    "accounts/login/": "the login form itself (throttled: test_security_login_throttle)",
    "accounts/logout/": "logging out needs no permission (POST with CSRF, Django's view)",
    "metrics": "Prometheus scrapes with its own token/network rule "
    "(test_api_metrics, test_security_metrics_proxy)",
    "api/": "ninja's API root of /api/workflows: answers 404 to everyone",
    "api/observability/": "ninja's API root: answers 404 to everyone",
    "api/observability/health": "the status alone is public for load balancers; the "
    "checks need dashboard.view_dashboard (test_api_health)",
}
# POST routes that change nothing (they render what was posted), so the view permission
# is all they need. They still refuse anonymous users, users without the view permission
# and a missing CSRF token; here a viewer's POST must leave every table as it was.
READ_ONLY_POSTS: dict[str, str] = {
    "traces/upload/": "shows an uploaded OTLP JSON file without storing it "
    "(tests/dashboard/traces/test_files.py)",
}
# The admin has its own guard (is_staff plus a permission per model and action), which
# Django tests; here we only check that it sends anonymous and non-staff users to its
# login page.
ADMIN = "admin/"

SAFE = ("GET", "HEAD")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
SAMPLES = {"int": "1", "slug": "reset", "uuid": "00000000-0000-0000-0000-000000000000"}


def _sample_regex(regex: str) -> str:
    def group(match: re.Match[str]) -> str:
        body = match.group(2)
        options = body.split("|")
        return options[0] if all(re.fullmatch(r"[\w-]+", o) for o in options) else "x"

    text = re.sub(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", group, regex)
    return text.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")


def _sample(pattern: Any) -> str:
    route = str(pattern.pattern)
    if hasattr(pattern.pattern, "converters"):
        return re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "str", "x"), route)
    return _sample_regex(route)


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + _sample(pattern))
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            yield route, "/" + prefix + _sample(pattern), pattern.callback


def _methods(callback: Any) -> tuple[str, ...]:
    """A ninja path's own methods; for a Django view, every method (405 is fine)."""
    for cell in getattr(callback, "__closure__", None) or ():
        operations = getattr(cell.cell_contents, "operations", None)
        if operations is not None:  # ninja's PathView, closed over by its view function
            return tuple(sorted({m for op in operations for m in op.methods}))
    return (*SAFE, *UNSAFE)


def _routes() -> list[tuple[str, str, tuple[str, ...]]]:
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for route, url, callback in _walk(get_resolver().url_patterns):
        found[(route, url)] = tuple(
            sorted(set(found.get((route, url), ())) | set(_methods(callback)))
        )
    return [(route, url, methods) for (route, url), methods in sorted(found.items())]


ROUTES = _routes()
GUARDED = [r for r in ROUTES if r[0] not in PUBLIC and not r[0].startswith(ADMIN)]
ADMIN_ROUTES = [
    r for r in ROUTES if r[0].startswith(ADMIN) and r[0] not in ("admin/login/", "admin/logout/")
]


@pytest.fixture(autouse=True)
def _no_throttle(settings: Any) -> Iterator[None]:
    settings.API_RATE_LIMIT = ""
    settings.LOGIN_RATE_LIMIT = ""
    throttle.reset()
    yield
    throttle.reset()


def _call(client: Client, method: str, url: str) -> Any:
    return client.generic(method, url, b"", content_type="application/json")


def _refused(response: Any, *, anonymous: bool) -> bool:
    if response.status_code in (403, 405):
        return True
    if anonymous and response.status_code == 401:
        return True
    return (
        anonymous
        and response.status_code == 302
        and "/accounts/login/" in response.get("Location", "")
    )


def test_the_walk_finds_the_routes_it_must() -> None:
    routes = {route for route, _, _ in ROUTES}
    for expected in [
        "",
        "traces/<str:trace_id>/",
        "api/observability/circuit-breakers/<name>/reset",
        "api/workflows/<workflow_id>/execute",
        "api/observability/docs",
        "simulation/pattern/",
        "admin/",
    ]:
        assert expected in routes
    methods = {r: m for r, _, m in ROUTES}
    assert methods["api/observability/checkpoints/<checkpoint_id>"] == ("DELETE", "GET")
    assert set(PUBLIC) <= routes, "an allow-listed route no longer exists: drop it"
    assert set(READ_ONLY_POSTS) <= routes, "a read-only POST route no longer exists: drop it"


@pytest.mark.parametrize(("route", "url", "methods"), GUARDED, ids=[r[0] or "/" for r in GUARDED])
def test_every_route_refuses_anonymous_callers(route: str, url: str, methods: tuple[str]) -> None:
    client = Client()
    for method in methods:
        response = _call(client, method, url)
        assert _refused(response, anonymous=True), (method, url, response.status_code)


@pytest.mark.parametrize(("route", "url", "methods"), GUARDED, ids=[r[0] or "/" for r in GUARDED])
def test_every_route_refuses_a_user_without_the_view_permission(
    route: str, url: str, methods: tuple[str]
) -> None:
    # "nobody" holds every permission but the view one: a route checking only its own
    # permission (a mutation's) must still refuse.
    others = [
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.select_related("content_type")
        if f"{p.content_type.app_label}.{p.codename}" != VIEW_DASHBOARD
    ]
    client = Client()
    client.force_login(testing.make_user("nobody", *others))
    for method in methods:
        response = _call(client, method, url)
        assert _refused(response, anonymous=False), (method, url, response.status_code)


@pytest.mark.parametrize(("route", "url", "methods"), GUARDED, ids=[r[0] or "/" for r in GUARDED])
def test_every_state_change_needs_the_csrf_token(route: str, url: str, methods: tuple[str]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("root", password=None))
    for method in set(methods) & set(UNSAFE):
        response = _call(client, method, url)
        assert _refused(response, anonymous=False), (method, url, response.status_code)


@pytest.mark.parametrize(("route", "url", "methods"), GUARDED, ids=[r[0] or "/" for r in GUARDED])
def test_every_state_change_needs_its_own_permission(
    route: str, url: str, methods: tuple[str]
) -> None:
    client = Client()
    client.force_login(testing.make_user("viewer", "dashboard.view_dashboard"))
    for method in set(methods) & set(UNSAFE):
        if route in READ_ONLY_POSTS and method == "POST":
            before = _row_counts()
            response = _call(client, method, url)
            assert response.status_code < 500, (method, url, response.status_code)
            assert _row_counts() == before, f"{route} is listed as read-only but wrote rows"
            continue
        response = _call(client, method, url)
        assert _refused(response, anonymous=False), (method, url, response.status_code)


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


@pytest.mark.parametrize(
    ("route", "url", "methods"), ADMIN_ROUTES, ids=[r[0] for r in ADMIN_ROUTES]
)
def test_the_admin_sends_anonymous_and_non_staff_users_to_its_login(
    route: str, url: str, methods: tuple[str]
) -> None:
    viewer = Client()
    viewer.force_login(testing.make_user("viewer", "dashboard.view_dashboard"))
    for client in (Client(), viewer):
        response = client.get(url)
        assert response.status_code == 302, (url, response.status_code)
        assert response["Location"].startswith("/admin/login/")


WEBSOCKETS = [str(p.pattern) for p in websocket_urlpatterns]


@pytest.mark.parametrize("route", WEBSOCKETS)
async def test_every_socket_refuses_anonymous_and_unpermitted_users(route: str) -> None:
    from channels.db import database_sync_to_async

    nobody = await database_sync_to_async(testing.make_user)("nobody")
    for user in (AnonymousUser(), nobody):
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/" + route)
        communicator.scope["user"] = user
        connected, _ = await communicator.connect()
        assert not connected, (route, user)
        await communicator.disconnect()
