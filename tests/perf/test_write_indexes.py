"""What a submit writes into indexes (issue 15, P1: migrations ``tasks.0020``, ``billing.0010``).

Every index a row enters costs the insert (and each later update that is not HOT) an entry and
its WAL. A new task and its hold enter only the indexes their queries need: columns a submit
leaves empty are indexed where set, the ledger's organization is indexed by the composite
indexes that start with it, and no ``LIKE`` copy of a varchar index is kept.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from apps.accounts.models import MembershipTier, Organization
from apps.billing.models import LedgerEntry
from apps.tasks.enums import Action
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _indexes_entered(table: str, pk_column: str, pk: Any) -> set[str]:
    """The indexes of ``table`` whose predicate (if any) admits the row ``pk``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
            [table],
        )
        indexes = cursor.fetchall()
        entered = set()
        for name, predicate in indexes:
            if predicate is None:
                entered.add(name)
                continue
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {pk_column} = %s AND ({predicate}))",  # noqa: S608
                [pk],
            )
            if cursor.fetchone()[0]:
                entered.add(name)
    return entered


def test_a_submit_writes_only_the_indexes_its_queries_need(
    organization: Organization, live_key: Any, fund: Any
) -> None:
    MembershipTier.objects.filter(pk=organization.tier_id).update(max_unfinished_tasks=10)
    fund(organization, 1_000_000)
    caller = Caller(organization=organization, api_key=live_key.api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    assert _indexes_entered("tasks_task", "id", task.pk) == {
        "tasks_task_pkey",
        "task_created",
        "task_org_recent",
        "task_org_status",
        "task_queue",
        "task_queued_fair",
        "task_tenant_queued",
        "tasks_task_api_key_id_7f70126c",
        "tasks_task_engine_8b9b4d17",
        "tasks_task_upstream_job_id_44662c10",
    }
    hold = LedgerEntry.objects.get(task_id=task.pk)
    assert _indexes_entered("billing_ledgerentry", "id", hold.pk) == {
        "billing_ledgerentry_pkey",
        "unique_ledger_idempotency_key",
        "ledger_org_recent",
        "billing_ledgerentry_created_at_af56c147",
        "billing_ledgerentry_kind_67bca6de",
        "billing_ledgerentry_stripe_object_id_f77c6298",
        "billing_ledgerentry_task_id_edd7e9cb",
    }


@pytest.mark.parametrize(
    ("where", "kind", "index"),
    [
        ("parent_id = %s", "text", "task_parent"),
        ("parent_id IN (%s, 'x')", "text", "task_parent"),
        ("created_by_id = %s", "bigint", "task_created_by"),
        (
            "upstream_account_id = %s AND status IN ('SUBMITTED', 'IN_PROGRESS')",
            "bigint",
            "task_account_status",
        ),
        ("finished_at >= %s", "timestamptz", "task_finished"),
    ],
)
def test_the_partial_indexes_serve_queries_that_compare_with_a_value(where, kind, index):
    """A comparison with a value (even a parameter, as in a generic plan) excludes NULL, so the
    planner may use an index of the rows that have one."""
    value = {"text": "1", "bigint": 1, "timestamptz": "2026-01-01T00:00:00Z"}[kind]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(
            f"PREPARE partial_probe ({kind}) AS SELECT id FROM tasks_task WHERE {where % '$1'}"  # noqa: S608
        )
        try:
            cursor.execute("EXPLAIN EXECUTE partial_probe (%s)", [value])
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE partial_probe")
    assert index in plan, plan
