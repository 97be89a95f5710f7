"""Review finding: DATABASE_CONN_MAX_AGE > 0 under ASGI, where each request's sync code
runs on a thread of its own (Django's ThreadSensitiveContext per request)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.db import connections

from dashboard.db import pool
from tests.asgi import asgi_request, response_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_pool() -> Iterator[None]:
    for raw in pool.clear():
        raw.close()
    yield
    for raw in pool.clear():
        raw.close()


async def test_with_conn_max_age_asgi_requests_still_share_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With CONN_MAX_AGE=60 a request's connection is kept on its thread, which ends with
    the request: the connection is neither pooled nor closed (left to the garbage
    collector; on PostgreSQL an open session each), and every request opens a new one."""
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    opened: list[Any] = []
    stock = next(
        cls
        for cls in type(connections["default"]).__mro__
        if cls.__module__.startswith("django.db.backends") and "get_new_connection" in vars(cls)
    )
    original = stock.get_new_connection

    def counting(self: Any, conn_params: dict[str, Any]) -> Any:
        raw = original(self, conn_params)
        opened.append(raw)
        return raw

    monkeypatch.setattr(stock, "get_new_connection", counting)
    application = get_asgi_application()
    for _ in range(10):
        status, _, _ = response_of(await asgi_request(application, "/api/observability/health"))
        assert status == 200
    assert len(opened) <= 2  # as with CONN_MAX_AGE=0 (test_pool)
