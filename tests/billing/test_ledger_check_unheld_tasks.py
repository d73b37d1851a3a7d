"""``ledger_check`` sees tasks the ledger has no entry of: a live task that was accepted but never
held ran free; a test key's task that was held or captured moved real tokens."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Organization
from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_release, task_hold_key
from apps.billing.models import Balance, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import TaskFactory
from tests.tasks.helpers import instant_sandbox_pool, run_to_completion, sandbox_account

from .helpers import new_task

pytestmark = pytest.mark.django_db

FUNDS = 1_000_000
PRICE = 14_000  # IMAGINE FAST


def _drifts(**options: Any) -> list[str]:
    return [str(d) for d in ledger_audit(**options).drifts]


def _tasks_that_hold_nothing_by_design(organization: Organization, make_key: Any) -> None:
    """A test key's task, a MODAL task waiting for its second step, a task that never got past
    acceptance (no ``submitted_at``) and a live task of price 0 (it holds 0): all fine."""
    instant_sandbox_pool()
    test_caller = Caller(
        organization=organization, api_key=make_key(organization, is_test=True).api_key
    )
    test_task = task_submit(caller=test_caller, action=Action.IMAGINE, prompt="a fox").task
    assert run_to_completion(test_task.pk).status == Status.SUCCESS
    TaskFactory(organization=organization, modal=True)
    new_task(organization, status=Status.FAILURE)
    free = TaskFactory(organization=organization, queued=True)
    ledger_hold(task=free, amount=0)


def test_a_live_task_that_ran_without_a_hold_is_reported(
    organization: Organization, fund: Any, make_key: Any
) -> None:
    fund(organization, FUNDS)
    _tasks_that_hold_nothing_by_design(organization, make_key)
    assert ledger_audit().ok
    caller = Caller(organization=organization, api_key=make_key(organization).api_key)
    sandbox_account()
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task
    # The drift: the hold never happened (its rows removed and the balance put back, as if
    # acceptance had skipped it).
    LedgerEntry.objects.filter(task_id=task.pk).delete()
    Balance.objects.filter(organization=organization).update(available=FUNDS, held=0)
    done = run_to_completion(task.pk)
    assert (done.status, done.is_test, done.price) == (Status.SUCCESS, False, PRICE)
    assert balance_get(organization=organization).available == FUNDS  # it ran free
    assert _drifts() == [
        f"[settle] organization {organization.pk}, task {task.pk}: the live task was accepted "
        f"(SUCCESS) but never held (expected {task_hold_key(task.pk)}, actual nothing)"
    ]


def test_a_test_task_that_moved_tokens_is_reported(organization: Organization, fund: Any) -> None:
    fund(organization, FUNDS)
    captured = TaskFactory(organization=organization, succeeded=True, is_test=True)
    ledger_hold(task=captured, amount=PRICE)
    ledger_capture(task=captured)
    released = TaskFactory(organization=organization, failed=True, is_test=True)
    ledger_hold(task=released, amount=PRICE)
    ledger_release(task=released)
    org = organization.pk
    assert sorted(_drifts()) == [
        f"[settle] organization {org}, task {captured.pk}: a test task moved tokens "
        "(expected no hold, capture or release, actual ['capture', 'hold'])",
        f"[settle] organization {org}, task {released.pk}: a test task moved tokens "
        "(expected no hold, capture or release, actual ['hold', 'release'])",
    ]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5000])
def test_every_chunk_of_the_task_table_is_checked(
    organization: Organization, fund: Any, chunk_size: int
) -> None:
    fund(organization, FUNDS)
    tasks = [TaskFactory(organization=organization, queued=True) for _ in range(7)]
    unheld = sorted(t.pk for t in tasks[1::3])
    for task in tasks:
        if task.pk not in unheld:
            ledger_hold(task=task, amount=100)
    report = ledger_audit(chunk_size=chunk_size)
    assert sorted(d.task_id or "" for d in report.drifts) == unheld
    assert all(d.message.endswith("but never held") for d in report.drifts)


def test_the_unheld_check_reads_the_task_table_a_chunk_per_statement(
    organization: Organization, fund: Any
) -> None:
    """Two statements per chunk of tasks (its last key, then its offenders), whatever number of
    tasks or ledger entries a chunk holds: the check scales with the table, by chunks."""
    fund(organization, FUNDS)
    for _ in range(9):
        ledger_hold(task=TaskFactory(organization=organization, queued=True), amount=100)

    def statements_of_the_task_walk() -> int:
        with CaptureQueriesContext(connection) as queries:
            ledger_audit(chunk_size=4)
        return sum(
            q["sql"].startswith('SELECT "tasks_task"') and "NOT (EXISTS(" in q["sql"]
            for q in queries
        )

    # 9 tasks in chunks of 4: three chunks, each with one offender statement.
    assert statements_of_the_task_walk() == 3
