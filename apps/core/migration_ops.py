"""Schema operations for migrations that must not stop a live database's writes.

``CREATE INDEX`` holds a lock that blocks every write to the table for as long as the index
takes to build: seconds to minutes on a task table of millions of rows, during which no submit
is accepted and no task moves. PostgreSQL's ``CREATE INDEX CONCURRENTLY`` builds the index
beside the writes instead (it reads the table twice and waits for the transactions that were
running when it began). These operations do that on PostgreSQL and fall back to Django's
plain ``AddIndex`` / ``RemoveIndex`` elsewhere (SQLite, the embedded setup), where
``django.contrib.postgres``'s own would fail.

A migration using them sets ``atomic = False`` (``CONCURRENTLY`` cannot run in a
transaction). To replace an index under the same name without a moment when queries have
neither, add the new one under a temporary name, remove the old one, then ``RenameIndex``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db.migrations.operations import AddIndex, RemoveIndex
from django.db.migrations.operations.base import Operation


class _ConcurrentlyOnPostgreSQL:
    """Run the concurrent operation on PostgreSQL and ``plain``'s elsewhere."""

    plain: type[Operation]

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run("database_forwards", app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run("database_backwards", app_label, schema_editor, from_state, to_state)

    def _run(
        self, step: str, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        args = (app_label, schema_editor, from_state, to_state)
        if schema_editor.connection.vendor == "postgresql":
            getattr(super(), step)(*args)
        else:
            getattr(self.plain, step)(self, *args)


class AddIndexWithoutLock(_ConcurrentlyOnPostgreSQL, AddIndexConcurrently):
    """``AddIndex``, built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""

    plain = AddIndex


class RemoveIndexWithoutLock(_ConcurrentlyOnPostgreSQL, RemoveIndexConcurrently):
    """``RemoveIndex``, dropped with ``DROP INDEX CONCURRENTLY`` on PostgreSQL (a plain drop
    waits for every query on the table and blocks the ones behind it)."""

    plain = RemoveIndex
