"""Hot-path statements are prepared on their connection (apps/core/db.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.db import prepared_cursor

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SQL = "SELECT id, name FROM accounts_organization WHERE id = %s AND name <> %s"


def _prepared() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["SELECT id, name FROM accounts_organization WHERE id = $1%"],
        )
        return int(cursor.fetchone()[0])


def test_a_statement_is_prepared_once_and_seen_like_any_query(organization) -> None:
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            with prepared_cursor() as cursor:
                cursor.execute(SQL, [organization.pk, "x"])
                assert cursor.fetchall() == [(organization.pk, organization.name)]
    assert len(queries.captured_queries) == 3
    assert queries.captured_queries[0]["sql"].startswith(
        "SELECT id, name FROM accounts_organization"
    )
    assert _prepared() == 1


def test_turned_off_it_is_django_s_own_cursor(settings, organization) -> None:
    settings.DATABASE_PREPARED_STATEMENTS = False
    with prepared_cursor() as cursor:
        cursor.execute(SQL.replace("<>", "!="), [organization.pk, "x"])
        assert cursor.fetchone() == (organization.pk, organization.name)
    assert _prepared() == 0
