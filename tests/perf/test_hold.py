"""The hold of a submit is one conditional UPDATE … RETURNING feeding the ledger row (issue 15)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_hold, ledger_topup
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.core.errors import InsufficientBalance
from apps.tasks.enums import Status
from tests.factories import OrganizationFactory, TaskFactory


def _task(org, price=100):  # type: ignore[no-untyped-def]
    return TaskFactory(organization=org, status=Status.NOT_START, price=price, is_test=False)


@pytest.mark.django_db
def test_hold_is_one_statement_and_leaves_the_ledger_clean() -> None:
    org = OrganizationFactory()
    ledger_topup(organization=org, amount=1000, idempotency_key="t1")
    task = _task(org)
    with transaction.atomic(), CaptureQueriesContext(connection) as ctx:
        entry = ledger_hold(task=task, amount=300)
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1, statements
    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.kind, stored.delta_available, stored.delta_held) == (EntryKind.HOLD, -300, 300)
    assert (stored.available_after, stored.held_after) == (700, 300)
    assert stored.task_id == task.pk
    balance = Balance.objects.get(organization=org)
    assert (balance.available, balance.held) == (700, 300)
    assert ledger_audit().ok


@pytest.mark.django_db
def test_hold_beyond_the_balance_is_refused_and_moves_nothing() -> None:
    org = OrganizationFactory()
    ledger_topup(organization=org, amount=100, idempotency_key="t1")
    task = _task(org)
    with pytest.raises(InsufficientBalance) as refused, transaction.atomic():
        ledger_hold(task=task, amount=101)
    assert refused.value.details == {"required": 101, "available": 100}
    balance = Balance.objects.get(organization=org)
    assert (balance.available, balance.held) == (100, 0)
    assert not LedgerEntry.objects.filter(kind=EntryKind.HOLD).exists()


@pytest.mark.django_db
def test_a_second_hold_of_a_task_returns_the_first() -> None:
    org = OrganizationFactory()
    ledger_topup(organization=org, amount=1000, idempotency_key="t1")
    task = _task(org)
    with transaction.atomic():
        first = ledger_hold(task=task, amount=300)
        again = ledger_hold(task=task, amount=300)
    assert again.pk == first.pk
    assert Balance.objects.get(organization=org).available == 700
    assert ledger_audit().ok


@pytest.mark.django_db
def test_the_hold_is_prepared_once_per_connection_and_reused() -> None:
    """PostgreSQL parses and plans the hold once per connection, not once per submit."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    org = OrganizationFactory()
    ledger_topup(organization=org, amount=1000, idempotency_key="t1")

    def hold_statements() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT generic_plans + custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE %s",
                ["SELECT hold_id%FROM ledger_task_hold(%"],
            )
            return [row[0] for row in cursor.fetchall()]

    for price in (100, 200, 300):
        with transaction.atomic():
            ledger_hold(task=_task(org), amount=price)
    runs = hold_statements()
    assert len(runs) == 1 and runs[0] == 3, runs
    balance = Balance.objects.get(organization=org)
    assert (balance.available, balance.held) == (400, 600)
    assert ledger_audit().ok
