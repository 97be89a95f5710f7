"""The pooled backends (dashboard/db): on SQLite here, on PostgreSQL in `make test-postgres`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
from django.core.signals import request_finished, request_started
from django.db import DatabaseError, connection, connections

from dashboard import db
from dashboard.db import ConnectionPool, pool
from tests.asgi import asgi_request, response_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_pool() -> Iterator[None]:
    for raw in pool.clear():
        raw.close()
    yield
    for raw in pool.clear():
        raw.close()


def in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work`` on a new thread (its own Django connection), as ASGI runs a request."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def query_and_close() -> Any:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    raw = connection.connection
    connection.close()
    return raw


def raw_is_open(raw: Any) -> bool:
    if connection.vendor == "sqlite":
        try:
            raw.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - sqlite3.ProgrammingError once closed
            return False
        return True
    return not raw.closed


def test_an_idle_connection_closed_on_one_thread_serves_the_next_thread() -> None:
    first = in_thread(query_and_close)
    assert pool.idle_count() == 1
    second = in_thread(query_and_close)
    assert second is first
    assert raw_is_open(second)


def test_a_connection_closed_inside_a_transaction_is_really_closed() -> None:
    def begin_and_close() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1")
        raw = connection.connection
        connection.close()
        return raw

    raw = in_thread(begin_and_close)
    assert pool.idle_count() == 0
    assert not raw_is_open(raw)
    assert in_thread(query_and_close) is not raw


def test_a_connection_that_saw_a_database_error_is_not_pooled() -> None:
    def fail_and_close() -> Any:
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
        assert connection.errors_occurred
        raw = connection.connection
        connection.close()
        return raw

    raw = in_thread(fail_and_close)
    assert pool.idle_count() == 0
    assert not raw_is_open(raw)


def test_a_dead_pooled_connection_is_dropped_and_a_new_one_opened() -> None:
    first = in_thread(query_and_close)
    first.close()  # the server went away, or the file handle did
    second = in_thread(query_and_close)
    assert second is not first
    assert raw_is_open(second)


def test_pool_size_zero_turns_pooling_off(settings: Any) -> None:
    original = connection.settings_dict.get("POOL_SIZE")
    connection.settings_dict["POOL_SIZE"] = 0
    try:

        def with_size_zero() -> Any:
            connection.settings_dict["POOL_SIZE"] = 0
            return query_and_close()

        raw = in_thread(with_size_zero)
    finally:
        if original is None:
            connection.settings_dict.pop("POOL_SIZE", None)
        else:
            connection.settings_dict["POOL_SIZE"] = original
    assert pool.idle_count() == 0
    assert not raw_is_open(raw)


def test_the_pool_keeps_at_most_size_idle_connections_per_key() -> None:
    own = ConnectionPool()
    assert own.give("a", object(), size=2)
    assert own.give("a", object(), size=2)
    assert not own.give("a", object(), size=2)
    assert own.give("b", object(), size=2)  # another database has its own room
    assert own.idle_count() == 3


def test_a_forked_child_never_takes_its_parents_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = ConnectionPool()
    parent_connection = object()
    own.give("a", parent_connection, size=2)
    monkeypatch.setattr(db.os, "getpid", lambda: -1)  # as after os.fork()
    assert own.take("a") is None
    assert own.idle_count() == 0


def test_connections_for_other_parameters_are_not_shared() -> None:
    own = ConnectionPool()
    mine = object()
    own.give("main-db", mine, size=2)
    assert own.take("test-db") is None
    assert own.take("main-db") is mine


async def test_successive_asgi_requests_share_one_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ASGI runs each request's sync code on a thread of its own: without the pool, each
    request opened (and closed) a connection."""
    opened: list[Any] = []
    stock = next(  # Django's own DatabaseWrapper, under the mixin
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
    # Without the pool: 10. A background thread (the span writer) may take the pooled
    # connection once and keep it, so the next request opens a second one.
    assert len(opened) <= 2


def test_a_pooled_connection_whose_server_session_ended_is_not_handed_out() -> None:
    """After a PostgreSQL restart (or pg_terminate_backend) an idle pooled connection
    looks open to the driver until it is used: the next request must not get it."""
    if connection.vendor != "postgresql":
        pytest.skip("server-side session end is a PostgreSQL case")
    import psycopg

    def pooled_backend() -> tuple[Any, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        raw = connection.connection
        connection.close()
        return raw, pid

    raw, pid = in_thread(pooled_backend)
    assert pool.idle_count() == 1
    # As a server restart: the server ends the session; the client has not noticed.
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            admin.execute("SELECT pg_stat_clear_snapshot()")
    assert not raw.closed  # the driver has not noticed

    second = in_thread(query_and_close)  # OperationalError before the fix
    assert second is not raw
    assert raw_is_open(second)


def test_a_pooled_sqlite_connection_has_foreign_keys_enforced_again() -> None:
    """Django turns foreign keys on when it opens a SQLite connection; code that turned
    them off (a raw PRAGMA; a non-atomic schema editor whose final check failed) must
    not hand the next request a connection that no longer enforces them."""
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite pragma")

    def switch_off_and_close() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys = OFF")
        raw = connection.connection
        connection.close()
        return raw

    def foreign_keys() -> tuple[Any, int]:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys")
            (value,) = cursor.fetchone()
        raw = connection.connection
        connection.close()
        return raw, value

    first = in_thread(switch_off_and_close)
    second, enforced = in_thread(foreign_keys)
    assert second is first  # pooled, not reopened
    assert enforced == 1


@pytest.fixture
def conn_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONN_MAX_AGE=60 (a settings module's choice) for the connections made in this
    test (every thread's wrapper reads the same settings dict)."""
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)


def a_request() -> Any:
    """What a request does with the database: the request signals around one query."""
    request_started.send(sender=None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    raw = connection.connection
    request_finished.send(sender=None)
    return raw


def test_with_conn_max_age_a_thread_keeps_its_connection_then_pools_it_once_older(
    conn_max_age: None,
) -> None:
    def requests() -> Any:
        first = a_request()
        assert connection.connection is first  # kept on the thread, not given back
        assert a_request() is first
        connection.close_at = time.monotonic() - 1  # older than CONN_MAX_AGE, no sleep
        request_started.send(sender=None)
        assert connection.connection is None
        return first

    raw = in_thread(requests)
    assert pool.idle_count() == 1  # idle and healthy: pooled for the next thread
    assert in_thread(query_and_close) is raw


def test_with_conn_max_age_a_connection_unusable_after_an_error_is_really_closed(
    conn_max_age: None,
) -> None:
    def failing_request() -> Any:
        request_started.send(sender=None)
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
        raw = connection.connection
        assert connection.errors_occurred
        wrapper = connections["default"]  # this thread's own, gone with the thread
        wrapper.is_usable = lambda: False  # type: ignore[method-assign]  # a broken session
        request_finished.send(sender=None)
        assert connection.connection is None
        return raw

    raw = in_thread(failing_request)
    assert pool.idle_count() == 0
    assert not raw_is_open(raw)


def test_with_conn_max_age_a_connection_still_usable_after_an_error_is_kept(
    conn_max_age: None,
) -> None:
    def request_with_an_error() -> Any:
        request_started.send(sender=None)
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
        raw = connection.connection
        request_finished.send(sender=None)  # Django's health check: usable, kept
        assert connection.connection is raw and not connection.errors_occurred
        return raw

    raw = in_thread(request_with_an_error)
    assert raw_is_open(raw)
    raw.close()  # its thread (and wrapper) ended without giving it back
