"""Django's PostgreSQL backend, with idle connections pooled (see ``dashboard.db``)."""

from __future__ import annotations

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
        )

    def _adopt(self, connection: Any) -> None:
        # As Django's get_new_connection: the wrapper's isolation level, from OPTIONS.
        # A pooled connection was made with the same parameters, so it already has it.
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        self.isolation_level = (
            IsolationLevel.READ_COMMITTED if level is None else IsolationLevel(level)
        )
