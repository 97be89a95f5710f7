"""Django's PostgreSQL backend, with idle connections pooled (see ``dashboard.db``)."""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.postgresql import base, creation
from psycopg import IsolationLevel, pq

from dashboard.db import DrainingCreationMixin, PooledConnectionMixin


class DatabaseCreation(DrainingCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(PooledConnectionMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _reusable(self, connection: Any) -> bool:
        if self.settings_dict["OPTIONS"].get("pool"):  # Django's own pool manages these
            return False
        return bool(
            not connection.closed
            and connection.info.transaction_status == pq.TransactionStatus.IDLE
            and not _has_input(connection)
        )

    def _adopt(self, connection: Any) -> None:
        # As Django's get_new_connection: the wrapper's isolation level, from OPTIONS.
        # A pooled connection was made with the same parameters, so it already has it.
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        self.isolation_level = (
            IsolationLevel.READ_COMMITTED if level is None else IsolationLevel(level)
        )


def _has_input(connection: Any) -> bool:
    """True when an idle connection's socket is readable: the server ended the session
    (restart, pg_terminate_backend, idle timeout) and the driver has not noticed yet.
    An idle session's server sends nothing unprompted (no LISTEN here), so no round trip
    is needed to tell."""
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # no socket any more
        return True
