"""The task table carries no index a query does not need (issue 15): each insert and each
status change writes every one of them."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.tasks.models import Task


def _indexes() -> list[tuple[str, list[str], bool, str]]:
    """(name, columns in order, partial, definition) of each index of the task table."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, i.indpred IS NOT NULL, pg_get_indexdef(i.indexrelid),
                   ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(num, pos)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
                         ORDER BY k.pos)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = %s::regclass
            """,
            [Task._meta.db_table],
        )
        return [(name, list(columns), partial, sql) for name, partial, sql, columns in cursor]


@pytest.mark.django_db
def test_no_task_index_is_the_prefix_of_another() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("index introspection of PostgreSQL")
    indexes = _indexes()
    assert len(indexes) > 5
    full = [(name, columns) for name, columns, partial, _ in indexes if not partial]
    redundant = [
        (name, other)
        for name, columns in full
        for other, longer in full
        if other != name and len(columns) < len(longer) and longer[: len(columns)] == columns
    ]
    assert redundant == []


@pytest.mark.django_db
def test_no_task_index_is_a_pattern_copy() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("index introspection of PostgreSQL")
    assert [name for name, _, _, sql in _indexes() if "pattern_ops" in sql] == []
