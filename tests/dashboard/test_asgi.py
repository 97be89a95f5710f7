from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.asgi import asgi_request, response_of

pytestmark = pytest.mark.django_db(transaction=True)


async def asgi_get(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """Drive the project's ASGI application through one GET, to completion."""
    from dashboard.asgi import application

    return response_of(await asgi_request(application, path))


async def test_asgi_application_serves_the_login_page_and_static_files() -> None:
    status, _, body = await asgi_get("/accounts/login/")
    assert status == 200
    assert b"Log in" in body
    status, headers, body = await asgi_get("/static/dashboard/dashboard.css")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/css")
    assert b"--closed" in body


async def test_asgi_application_requires_login_for_the_overview() -> None:
    status, headers, _ = await asgi_get("/")
    assert status == 302
    assert headers[b"location"].startswith(b"/accounts/login/")


# Retention off: this in-process server must not delete the test's rows.
@override_settings(CHECKPOINT_KEEP_LAST=0, CHECKPOINT_MAX_AGE="")
async def test_lifespan_startup_starts_the_runtime_and_shutdown_stops_it() -> None:
    from dashboard import runtime
    from dashboard.asgi import application

    runtime.stop()  # the test's own
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    replies: list[tuple[str, bool]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        replies.append((message["type"], runtime.current() is not None))

    await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert replies == [("lifespan.startup.complete", True), ("lifespan.shutdown.complete", False)]


@override_settings(CHECKPOINT_KEEP_LAST=0, CHECKPOINT_MAX_AGE="")
async def test_without_lifespan_the_first_connection_starts_the_runtime() -> None:
    from dashboard import runtime

    runtime.stop()
    assert runtime.current() is None
    status, _, _ = await asgi_get("/accounts/login/")
    assert status == 200
    started = runtime.current()
    assert started is not None
    await asgi_get("/accounts/login/")
    assert runtime.current() is started  # started once
