from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashboard import runtime
from dashboard.traces import tracing
from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry
from tests.clock import FakeClock


def _transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return "transactional_db" in request.fixturenames or bool(
        marker is not None and marker.kwargs.get("transaction")
    )


@pytest.fixture(autouse=True, scope="session")
def _no_stray_sessions_at_teardown(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """PostgreSQL refuses to drop the test database while a session is open on it.

    Worker threads (span writer, recorder, asyncio executors) keep the connection
    they opened until garbage collection; end those sessions before the drop.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True, scope="session")
def _no_span_retention() -> None:
    """The hourly span clean-up must not delete test data during a long run."""
    cleaner = tracing.retention()
    if cleaner is not None:
        cleaner.stop()


@pytest.fixture(autouse=True)
def dashboard_runtime(request: pytest.FixtureRequest) -> Iterator[runtime.Runtime]:
    """A fresh runtime per test, stopped afterwards: no listener, thread or breaker of
    one test is left for the next.

    Each test sees only the breakers and limiters it creates. The breaker recorder and
    the span processor write from their own threads: inside a test's transaction those
    writes would wait on the test's lock and land after the rollback, leaking rows into
    later tests; so only transactional tests (which commit) record, and stopping the
    runtime drains them before the tables are flushed. The server's threads (alert
    evaluator, retention, demo) stay off: tests run them themselves.
    """
    circuit_breaker_registry.clear()
    rate_limiter_registry.clear()
    transactional = _transactional(request)
    started = runtime.start(
        runtime.Features(
            cluster=False,
            record_breakers=transactional,
            live=True,
            alert_sources=True,
            traces=True,
            record_spans=transactional,
        )
    )
    try:
        yield started
    finally:
        runtime.stop()
        circuit_breaker_registry.clear()
        rate_limiter_registry.clear()


@pytest.fixture(autouse=True)
def _fresh_login_throttle() -> Iterator[None]:
    """Failed logins of one test must not throttle the next one (same 127.0.0.1)."""
    from dashboard import login_throttle

    login_throttle.reset()
    yield
    login_throttle.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def no_request_spans() -> Iterator[None]:
    """For tests that count stored spans: start from empty tables, and keep the spans
    of requests (this test's or stragglers of earlier ones) out of them."""
    from dashboard.traces.models import SpanRecord, TraceSummary

    installed = tracing.processor()
    if installed is not None:
        installed.enabled = False
        installed.force_flush()
    SpanRecord.objects.all().delete()
    TraceSummary.objects.all().delete()
    yield
    if installed is not None:
        installed.enabled = True
