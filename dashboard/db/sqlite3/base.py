"""Django's SQLite backend, with idle connections pooled (see ``dashboard.db``)."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, creation

from dashboard.db import DrainingCreationMixin, PooledConnectionMixin


class DatabaseCreation(DrainingCreationMixin, creation.DatabaseCreation):
    pass


class DatabaseWrapper(PooledConnectionMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _reusable(self, connection: Any) -> bool:
        # An in-memory database lives and dies with its one connection: never pooled.
        if self.is_in_memory_db():
            return False
        try:
            return not connection.in_transaction
        except Exception:  # noqa: BLE001 - sqlite3.ProgrammingError: already closed
            return False

    def _adopt(self, connection: Any) -> None:
        # As Django's get_new_connection: foreign keys enforced (code may have turned
        # them off on this connection: a non-atomic schema editor whose check failed does).
        connection.execute("PRAGMA foreign_keys = ON")
