"""Prepared statements for the hot paths' hand-written SQL (issue 15: submit, fetch, list).

Django binds parameters on the client (psycopg's ``ClientCursor``) and turns psycopg's automatic
preparation off, so PostgreSQL parses and plans every statement afresh: for the submit's lock
statement and INSERT and the fetch that is most of the server's CPU per request. A statement
run through :func:`prepared_cursor` is bound on the server and prepared on its connection the
first time, and each later run only executes the stored plan.

Through Django's cursor wrapper as any query: ``CaptureQueriesContext`` sees it and
``execute_wrapper`` hooks apply. ``DATABASE_PREPARED_STATEMENTS = False`` (a pooler in
transaction mode, where a session's prepared statements do not follow it) falls back to
Django's own cursor; so does any database but PostgreSQL with psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

#: A psycopg prepare threshold no statement reaches by repetition.
_NEVER = 2**62


class _Preparing:
    """A psycopg server-binding cursor whose ``execute`` prepares the statement."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._last: tuple[Any, Any] = (None, None)

    def execute(self, query: Any, params: Any = None) -> Any:
        self._last = (query, params)
        return self._cursor.execute(query, params, prepare=True)

    @property
    def _query(self) -> Any:
        """What Django's query log reads (``last_executed_query``; only when queries are
        logged): the statement with its values, as Django's own cursor would show it."""
        query, params = self._last
        return SimpleNamespace(query=None if query is None else _composed(query, params))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


def _composed(query: Any, params: Any) -> bytes | None:
    try:
        return str(connection.ops.compose_sql(query, params)).encode()  # type: ignore[attr-defined]
    except Exception:  # only the log's text: the statement itself ran
        return None


def prepared_statements_enabled(db: Any = None) -> bool:
    """Whether ``db`` (default: the default connection) prepares the hot paths' statements."""
    return (connections[DEFAULT_DB_ALIAS] if db is None else db).vendor == "postgresql" and bool(
        getattr(settings, "DATABASE_PREPARED_STATEMENTS", True)
    )


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor of the default connection whose statements are prepared (see the module)."""
    # The connection itself, looked up once (each attribute read through ``connection`` looks
    # it up again in the thread's connections).
    db = connections[DEFAULT_DB_ALIAS]
    if not prepared_statements_enabled(db):
        with db.cursor() as cursor:
            yield cursor
        return
    # Lazy: the PostgreSQL backend module needs psycopg, which a SQLite setup may not have.
    from django.db.backends.postgresql.base import ServerBindingCursor

    db.ensure_connection()
    db.validate_thread_sharing()
    psycopg_connection = db.connection
    if psycopg_connection.prepare_threshold is None:
        # Django sets None, which turns preparing off altogether; a threshold no statement
        # reaches prepares only what asks to be (``prepare=True``), as Django's own stay unprepared.
        psycopg_connection.prepare_threshold = _NEVER
    raw = ServerBindingCursor(psycopg_connection)  # type: ignore[call-arg]
    with db._prepare_cursor(_Preparing(raw)) as cursor:  # type: ignore[attr-defined]
        yield cursor


# --- relaxed commits ---------------------------------------------------------------------------
#
# A commit waits for its WAL record to reach the disk (``synchronous_commit``): 1-4 ms on this
# kind of machine, far more than the statements of a dispatch step. A few transactions of the
# slot cycle only keep books that the pipeline rebuilds if PostgreSQL itself crashed and lost
# them (a slot marked free, an assignment to an account): for those the commit need not wait.
# PostgreSQL stays consistent either way; such a commit is at most ``wal_writer_delay`` x 3 from
# the disk, and the next ordinary commit (the claim before any upstream submit, which stays
# synchronous) flushes it too, as the WAL is written in order. Never for money, a task's
# acceptance, or a record that must outlive a crash once something outside saw it.
#
# The setting is local to the transaction and travels inside the statement (no extra round
# trip): a statement that is its own transaction, or the first of a transaction the caller
# opened itself. ``relaxed_commit_wanted`` says whether the caller's transaction is its own.

#: Put before a statement (one with no WITH of its own) to relax its transaction's commit.
RELAXED_COMMIT = (
    "WITH relaxed_commit AS MATERIALIZED "
    "(SELECT set_config('synchronous_commit', 'off', true) AS relaxed) "
)
#: ANDed into that statement's WHERE clause (it makes PostgreSQL evaluate the setting).
RELAXED_COMMIT_CONDITION = "(SELECT relaxed FROM relaxed_commit) IS NOT NULL"


def relaxed_commit_wanted(*, outermost: bool) -> bool:
    """Whether a statement may relax its transaction's commit: on PostgreSQL, when the
    transaction is the caller's own (``outermost``: the caller's ``atomic`` block is the
    outermost one, or the statement runs on its own in autocommit), never inside a transaction
    somebody else opened (it would relax their commit too)."""
    return connection.vendor == "postgresql" and outermost


def advisory_xact_lock(name: str) -> None:
    """Hold the PostgreSQL advisory lock named ``name`` until the current transaction ends:
    what else takes it waits for this transaction's commit. Take it in the transaction itself,
    not in a savepoint that may roll back (PostgreSQL releases a rolled-back savepoint's locks
    at once). Nothing on SQLite, which runs one writing transaction at a time anyway."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
