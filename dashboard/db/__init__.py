"""Database backends that keep connections between requests.

Under ASGI, Django runs each request's synchronous code (middleware, views, ORM) on a
thread of its own, and database connections are per thread: with the stock backends
every request opens a connection and closes it at the end, whatever ``CONN_MAX_AGE``
says. On SQLite that open (connect, the pragmas, the SQL functions) costs several
hundred microseconds, more than the queries of an API read; on PostgreSQL it is a TCP
and authentication round trip.

``dashboard.db.sqlite3`` and ``dashboard.db.postgresql`` are Django's backends with one
change: when Django closes a connection that is idle (no transaction open, no error
seen), the raw connection goes into a small per-process pool instead, and the next
``connect()`` on any thread takes it from there. Everything else (``CONN_MAX_AGE``,
health checks, ``connection_created``, transactions) is Django's.

Rules the pool keeps:

- a connection is pooled only idle and healthy; one closed inside a transaction, after
  a database error, or that the driver reports closed is really closed;
- connections are never shared: a pooled one belongs to no wrapper until taken;
- the pool is per process (a forked child never takes its parent's connections) and
  per connection parameters (the test database is not the main one);
- the test runner's create and drop of a test database close the pool's connections
  first;
- at most ``POOL_SIZE`` idle connections (the ``DATABASES`` entry's key, default 8;
  0 turns pooling off); one more is closed.

settings.py selects these engines for the URLs ``dj-database-url`` parses; PostgreSQL's
own pool (Django 5.1's ``OPTIONS["pool"]``) needs ``psycopg_pool``, which this project
does not install.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

DEFAULT_POOL_SIZE = 8


class ConnectionPool:
    """Idle raw connections of one process, keyed by their connection parameters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: dict[str, list[Any]] = {}

    def _check_fork(self) -> None:
        # Called with the lock held. A child must not use (or close) its parent's
        # sockets and file handles: forget them.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = {}

    def take(self, key: str) -> Any | None:
        with self._lock:
            self._check_fork()
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def give(self, key: str, connection: Any, size: int) -> bool:
        """Keep ``connection`` for the next taker; False when the pool is full."""
        with self._lock:
            self._check_fork()
            idle = self._idle.setdefault(key, [])
            if len(idle) >= size:
                return False
            idle.append(connection)
            return True

    def clear(self) -> list[Any]:
        """Empty the pool; returns the connections for the caller to close."""
        with self._lock:
            self._check_fork()
            dropped = [c for idle in self._idle.values() for c in idle]
            self._idle = {}
            return dropped

    def idle_count(self) -> int:
        with self._lock:
            self._check_fork()
            return sum(len(idle) for idle in self._idle.values())


pool = ConnectionPool()


def drain() -> None:
    """Really close every idle connection (before a database is dropped, at shutdown)."""
    for connection in pool.clear():
        _quietly_close(connection)


class DrainingCreationMixin:
    """Mixed into a backend's ``DatabaseCreation``: the pool holds no connection to a
    test database when it is created or dropped (PostgreSQL refuses to drop a database
    that has sessions)."""

    # Called after Django closed the wrapper's own connection (into the pool), just
    # before the CREATE or DROP DATABASE.
    def _create_test_db(self, *args: Any, **kwargs: Any) -> Any:
        drain()
        return super()._create_test_db(*args, **kwargs)  # type: ignore[misc]

    def _destroy_test_db(self, *args: Any, **kwargs: Any) -> Any:
        drain()
        return super()._destroy_test_db(*args, **kwargs)  # type: ignore[misc]


class PooledConnectionMixin:
    """Mixed into a Django ``DatabaseWrapper``: ``_close`` pools, ``connect`` reuses."""

    connection: Any
    settings_dict: dict[str, Any]
    errors_occurred: bool
    alias: str

    def _pool_key(self, conn_params: dict[str, Any]) -> str:
        return f"{self.alias}|{type(self).__module__}|{sorted(conn_params.items())!r}"

    def _pool_size(self) -> int:
        return int(self.settings_dict.get("POOL_SIZE", DEFAULT_POOL_SIZE))

    def _reusable(self, connection: Any) -> bool:
        raise NotImplementedError

    def _adopt(self, connection: Any) -> None:
        """What the backend's ``get_new_connection`` sets up besides connecting."""

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        key = self._pool_key(conn_params)
        while (connection := pool.take(key)) is not None:
            if self._reusable(connection):
                self._adopt(connection)
                self._pooled_key = key
                return connection
            _quietly_close(connection)
        connection = super().get_new_connection(conn_params)  # type: ignore[misc]
        self._pooled_key = key
        return connection

    def _close(self) -> None:
        connection = self.connection
        key = getattr(self, "_pooled_key", None)
        if (
            connection is not None
            and key is not None
            and not self.errors_occurred
            and self._reusable(connection)
            and pool.give(key, connection, self._pool_size())
        ):
            return
        super()._close()  # type: ignore[misc]


def _quietly_close(connection: Any) -> None:
    # A broken pooled connection is dropped either way.
    with contextlib.suppress(Exception):
        connection.close()
