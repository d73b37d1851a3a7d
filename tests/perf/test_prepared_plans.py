"""Prepared statements keep their indexes (issue 15).

The submit's statements (its lock, its queue head) are prepared once per connection
(``apps/core/db.prepared_cursor``), and after a few executions PostgreSQL may run them with a
generic plan, planned without the parameters' values. A partial index is usable in a generic
plan only when its predicate is written in the statement: with the queued status passed as a
parameter, the tenant's queue head was read from every queued row of the tenant, and submits
slowed as its queue grew (seen in ``bench/submit.py``: 217 -> 153 submits/s over three rounds).
"""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction

from apps.tasks.enums import Mode
from apps.tasks.services.acceptance import _queue_head_sql

pytestmark = pytest.mark.django_db


def generic_plan(sql: str, types: dict[str, str], values: dict[str, object]) -> str:
    """EXPLAIN of ``sql`` (``%(name)s`` parameters) as a prepared statement's generic plan."""
    names = list(types)
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", sql)
    assert "%(" not in numbered
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE plan_probe ({', '.join(types.values())}) AS {numbered}")
        try:
            cursor.execute(
                f"EXPLAIN EXECUTE plan_probe ({', '.join(['%s'] * len(names))})",
                [values[name] for name in names],
            )
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE plan_probe")


@pytest.fixture
def served_table(organization) -> None:
    """Statistics of a table in service, whatever earlier tests left (the planner's choice
    among the tenant's indexes on a tiny table of unknown shape is a coin toss): the tenant
    has 40 queued tasks and 800 finished ones. Rolled back with the test, ANALYZE included."""
    from tests.factories import TaskFactory

    task = TaskFactory(queued=True, organization=organization, mode=Mode.FAST, tenant_seq=1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tasks_task SELECT (jsonb_populate_record(NULL::tasks_task, to_jsonb(t)"
            " || jsonb_build_object('id', t.id || 'q' || g, 'tenant_seq', g + 1))).*"
            " FROM tasks_task t, generate_series(1, 39) g WHERE t.id = %s",
            [task.pk],
        )
        cursor.execute(
            "INSERT INTO tasks_task SELECT (jsonb_populate_record(NULL::tasks_task, to_jsonb(t)"
            " || jsonb_build_object('id', t.id || 'f' || g, 'status', 'SUCCESS',"
            " 'tenant_seq', NULL))).* FROM tasks_task t, generate_series(1, 800) g"
            " WHERE t.id = %s",
            [task.pk],
        )
        cursor.execute("ANALYZE tasks_task")


def test_the_transaction_paths_queue_head_reads_the_partial_index_in_a_generic_plan(
    organization, served_table
):
    """The transaction path reads the head after its lock statement (``_queue_head_sql``)."""
    plan = generic_plan(
        _queue_head_sql(),
        {"organization": "bigint", "mode": "text", "is_test": "boolean"},
        {"organization": organization.pk, "mode": Mode.FAST, "is_test": False},
    )
    # The head is read from a partial index of queued rows, by the tenant (with statistics of
    # a real queue the planner takes ``task_tenant_queued``, already in ``tenant_seq`` order;
    # on the test's empty table either). With the status a parameter the generic plan read
    # the whole pool's queue through ``task_queue`` (status, mode) and filtered the tenant.
    head = re.search(r"Index (?:Only )?Scan using (\w+) on tasks_task q\b", plan)
    assert head is not None, plan
    assert head.group(1) in ("task_tenant_queued", "task_queued_fair"), plan


@pytest.mark.postgres
def test_the_one_statement_acceptances_queue_head_reads_a_partial_index_in_a_generic_plan(
    organization, served_table
):
    """``tasks_task_accept`` (PL/pgSQL) caches its statements' plans per connection and may use
    a generic plan after a few calls: its queue-head query keeps the status a literal too."""
    import importlib

    migration = importlib.import_module("apps.tasks.migrations.0018_task_accept_function")
    sql = migration.QUEUE_HEAD.format(
        mode="%(mode)s", is_test="%(is_test)s", organization="%(organization)s"
    )
    assert sql in migration.FORWARD.replace("v_mode", "%(mode)s").replace(
        "v_is_test", "%(is_test)s"
    ).replace("v_org", "%(organization)s")
    plan = generic_plan(
        sql,
        {"organization": "bigint", "mode": "text", "is_test": "boolean"},
        {"organization": organization.pk, "mode": Mode.FAST, "is_test": False},
    )
    head = re.search(r"Index (?:Only )?Scan using (\w+) on tasks_task q\b", plan)
    assert head is not None, plan
    assert head.group(1) in ("task_tenant_queued", "task_queued_fair"), plan


@pytest.mark.postgres
def test_the_one_statement_acceptance_never_sorts_the_queue_for_its_head():
    """Statistics older than the queue (a restored database, a burst after a quiet spell) made
    the planner read the head through ``task_queue`` and sort every queued row of the mode
    (33 ms a submit at 56,000 queued): the function runs with sorting off, so only the partial
    index's ordered scan is cheap to it (migration ``tasks.0019``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proconfig FROM pg_proc WHERE proname = 'tasks_task_accept'"
            " AND pg_function_is_visible(oid)"
        )
        (config,) = cursor.fetchone()
    assert "enable_sort=off" in (config or []), config
    # With sorting off, the head query's plan is an ordered index scan with no Sort node.
    import importlib

    migration = importlib.import_module("apps.tasks.migrations.0018_task_accept_function")
    sql = migration.QUEUE_HEAD.format(
        mode="%(mode)s", is_test="%(is_test)s", organization="%(organization)s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {sql}", {"mode": Mode.FAST, "is_test": False, "organization": 1})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Sort" not in plan, plan
    assert "task_tenant_queued" in plan, plan
