"""The pooled backends (dashboard/db): on SQLite here, on PostgreSQL in `make test-postgres`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.asgi import get_asgi_application
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
