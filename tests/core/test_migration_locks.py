"""Migrations build indexes without stopping a live database's writes.

A plain ``CREATE INDEX`` blocks every write to its table until the index is built: on a task
table of millions of rows, seconds to minutes without a submit accepted or a task moved. Index
changes from ``tasks.0020`` and ``billing.0010`` on use ``apps.core.migration_ops``
(``CREATE INDEX CONCURRENTLY`` on PostgreSQL, Django's plain operations elsewhere), and the
migrations run forwards and backwards on both databases.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import AddIndex, RemoveIndex, RunSQL

from apps.core.migration_ops import AddIndexWithoutLock, RemoveIndexWithoutLock

ROOT = Path(__file__).resolve().parents[2]

#: Per app, the first migration held to the rule (and every later one): for the apps with no
#: migration at that number yet, the next one they get.
FIRST_HELD = {
    "accounts": "0005",
    "api_keys": "0004",
    "billing": "0010",
    "core": "0002",
    "engines": "0005",
    "monitoring": "0002",
    "operator": "0003",
    "tasks": "0020",
    "translation": "0002",
    "webhooks": "0005",
}

_PLAIN_CREATE_INDEX = re.compile(r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", re.IGNORECASE)

#: The indexes the two migrations leave, by table: (name, the condition that makes it partial).
PARTIAL = {
    "tasks_task": {
        "task_account_status": "upstream_account_id",
        "task_finished": "finished_at",
        "task_parent": "parent_id",
        "task_created_by": "created_by_id",
    },
    "billing_ledgerentry": {"ledger_operator": "operator_id"},
}


def _held() -> list[tuple[str, str, Any]]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return sorted(
        (app, name, migration)
        for (app, name), migration in loader.disk_migrations.items()
        if app in FIRST_HELD and name[:4] >= FIRST_HELD[app]
    )


def test_every_app_of_ours_is_held_to_the_rule() -> None:
    ours = {c.label for c in apps.get_app_configs() if c.name.startswith("apps.")}
    with_migrations = {label for label in ours if (ROOT / "apps" / label / "migrations").is_dir()}
    assert with_migrations <= set(FIRST_HELD), sorted(with_migrations - set(FIRST_HELD))


def test_index_changes_from_then_on_do_not_lock_their_table() -> None:
    held = _held()
    assert {(app, name[:4]) for app, name, _ in held} >= {("tasks", "0020"), ("billing", "0010")}
    for app, name, migration in held:
        for operation in migration.operations:
            where = f"{app}.{name}: {operation.describe()}"
            if isinstance(operation, AddIndex):
                assert isinstance(operation, AddIndexWithoutLock), where
                assert not migration.atomic, where  # CONCURRENTLY refuses a transaction
            if isinstance(operation, RemoveIndex):
                assert isinstance(operation, RemoveIndexWithoutLock), where
            if isinstance(operation, RunSQL):
                sql = operation.sql if isinstance(operation.sql, str) else repr(operation.sql)
                assert not _PLAIN_CREATE_INDEX.search(sql), where


@pytest.mark.django_db(transaction=True)  # sqlmigrate, like migrate, outside a transaction
@pytest.mark.parametrize(("app", "name"), [("tasks", "0020"), ("billing", "0010")])
def test_on_postgresql_they_build_concurrently_outside_a_transaction(app: str, name: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("CONCURRENTLY is PostgreSQL's")
    out = io.StringIO()
    call_command("sqlmigrate", app, name, stdout=out)
    sql = out.getvalue()
    creates = re.findall(r"CREATE\s+INDEX[^;]*;", sql)
    assert len(creates) == {"tasks": 4, "billing": 1}[app], sql
    assert all(create.startswith("CREATE INDEX CONCURRENTLY") for create in creates), creates
    assert not re.search(r"^(BEGIN|COMMIT);", sql, re.MULTILINE), sql


def _migrate(env: dict[str, str], *target: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0", *target],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=database_url,
        MJGATE_VAR_DIR=str(tmp_path),
    )
    return env


def _there_and_back(env: dict[str, str], indexes: Any) -> None:
    """Forwards to the end, back to before the two migrations, forwards again: the partial
    indexes exist at the end both times and are gone in between."""
    _migrate(env)
    assert indexes() == PARTIAL
    _migrate(env, "tasks", "0019")
    _migrate(env, "billing", "0009")
    # Before them: the two replaced indexes whole, the two new ones and the ledger's absent.
    assert indexes() == {
        "tasks_task": {"task_account_status": "", "task_finished": ""},
        "billing_ledgerentry": {},
    }
    _migrate(env)
    assert indexes() == PARTIAL


@pytest.mark.slow
def test_on_sqlite_they_run_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"

    def indexes() -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        with sqlite3.connect(path) as db:
            for table, wanted in PARTIAL.items():
                rows = db.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                    (table,),
                ).fetchall()
                found[table] = {
                    index: wanted[index] if f'"{wanted[index]}" IS NOT NULL' in sql else ""
                    for index, sql in rows
                    if index in wanted
                }
        return found

    _there_and_back(_env(f"sqlite:///{path}", tmp_path), indexes)


@pytest.mark.slow
@pytest.mark.postgres
def test_on_postgresql_they_run_both_ways(tmp_path: Path) -> None:
    if not settings.TESTS_ON_POSTGRES:
        pytest.skip("needs PostgreSQL")
    base = settings.DATABASES["default"]
    name = f"mjgate_migrations_{uuid.uuid4().hex[:8]}"
    admin = f"host={base['HOST'] or '127.0.0.1'} port={base['PORT'] or 5432} user={base['USER']} dbname=postgres"
    if base.get("PASSWORD"):
        admin += f" password={base['PASSWORD']}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://{base['USER']}:{base.get('PASSWORD') or ''}@{base['HOST'] or '127.0.0.1'}:{base['PORT'] or 5432}/{name}"
    try:

        def indexes() -> dict[str, dict[str, str]]:
            found: dict[str, dict[str, str]] = {}
            with psycopg.connect(admin.replace("dbname=postgres", f"dbname={name}")) as db:
                for table, wanted in PARTIAL.items():
                    rows = db.execute(
                        "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid), i.indisvalid"
                        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                        " WHERE i.indrelid = %s::regclass",
                        (table,),
                    ).fetchall()
                    found[table] = {}
                    for index, predicate, valid in rows:
                        if index in wanted:
                            assert valid, index
                            column = wanted[index]
                            is_partial = predicate and f"{column} IS NOT NULL" in predicate
                            found[table][index] = column if is_partial else ""
            return found

        _there_and_back(_env(url, tmp_path), indexes)
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
