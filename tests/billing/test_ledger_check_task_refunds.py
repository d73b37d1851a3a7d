"""``ledger_check`` checks refunds linked to a task: only ``ledger_refund_task``'s one refund of
what a charged task paid passes; anything else made tokens out of nothing. And ``ledger_refund``
no longer writes a refund linked to a task, nor one under a task's key."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Organization
from apps.billing.audit import ledger_audit
from apps.billing.ledger import (
    ledger_capture,
    ledger_hold,
    ledger_refund,
    ledger_refund_task,
    ledger_release,
    task_refund_key,
)
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.core.errors import ValidationFailed
from apps.tasks.enums import Action
from apps.tasks.models import Task
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit

from .helpers import new_task, snapshot
from .test_ledger_check import insert_entry

pytestmark = pytest.mark.django_db

PRICE = 14_000  # IMAGINE FAST


def _rogue_refund(task: Task, amount: int, *, key: str | None = None) -> LedgerEntry:
    """A refund entry linked to ``task``, written the way a bug or a hand edit would, with the
    balance moved along (so only the task check can tell)."""
    last = LedgerEntry.objects.filter(organization_id=task.organization_id).order_by("-id")[0]
    insert_entry(
        task.organization_id,
        kind=EntryKind.REFUND,
        task_id=task.pk,
        delta_available=amount,
        available_after=last.available_after + amount,
        held_after=last.held_after,
        idempotency_key=key or task_refund_key(task.pk),
        reason="goodwill",
    )
    Balance.objects.filter(organization_id=task.organization_id).update(
        available=last.available_after + amount
    )
    return LedgerEntry.objects.filter(task_id=task.pk, kind=EntryKind.REFUND).latest("id")


def _drifts() -> list[str]:
    return [str(d) for d in ledger_audit().drifts]


def _charged(organization: Organization, amount: int = PRICE) -> Task:
    task = new_task(organization, status="SUCCESS")
    ledger_hold(task=task, amount=amount)
    ledger_capture(task=task)
    return task


def test_a_refund_of_a_cancelled_task_that_never_paid_is_reported(
    organization: Organization, fund: Any, make_key: Any
) -> None:
    fund(organization, 100_000)
    caller = Caller(organization=organization, api_key=make_key(organization).api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task
    task_cancel(organization=organization, task_id=task.pk)
    # Beside it, what is fine: the operator's refund of a charged task, a released task.
    ledger_refund_task(task=_charged(organization), operator=None, reason="blurry")
    released = new_task(organization, status="FAILURE")
    ledger_hold(task=released, amount=PRICE)
    ledger_release(task=released)
    assert ledger_audit().ok
    _rogue_refund(task, PRICE)
    report = ledger_audit()
    assert (report.tasks, report.drift_count) == (3, 1)
    assert [str(d) for d in report.drifts] == [
        f"[settle] organization {organization.pk}, task {task.pk}: the task was refunded but "
        "never charged (expected one capture, actual ['release'])"
    ]


def test_refunds_beyond_what_a_task_paid_are_reported(
    organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    org = organization.pk
    twice_the_capture = _charged(organization)
    _rogue_refund(twice_the_capture, 2 * PRICE)
    refunded_twice = _charged(organization)
    ledger_refund_task(task=refunded_twice, operator=None, reason="blurry")
    _rogue_refund(refunded_twice, PRICE, key=f"task:{refunded_twice.pk}:refund-again")
    test_task = new_task(organization, status="SUCCESS", is_test=True)
    _rogue_refund(test_task, PRICE)
    never_held = new_task(organization, status="SUCCESS")
    _rogue_refund(never_held, PRICE)
    a_debit = _charged(organization)
    _rogue_refund(a_debit, -1_000)
    assert sorted(_drifts()) == sorted(
        [
            f"[settle] organization {org}, task {twice_the_capture.pk}: the task was refunded "
            f"more than it was charged (expected {PRICE}, actual {2 * PRICE})",
            f"[settle] organization {org}, task {refunded_twice.pk}: the task was refunded more "
            f"than once (expected 1, actual [{PRICE}, {PRICE}])",
            f"[settle] organization {org}, task {refunded_twice.pk}: a refund linked to the task "
            f"is not the task's refund (expected task:{refunded_twice.pk}:refund, actual "
            f"task:{refunded_twice.pk}:refund-again)",
            f"[settle] organization {org}, task {refunded_twice.pk}: the task was refunded more "
            f"than it was charged (expected {PRICE}, actual {2 * PRICE})",
            f"[settle] organization {org}, task {test_task.pk}: the task was refunded but never "
            "charged (expected one capture, actual nothing)",
            f"[settle] organization {org}, task {never_held.pk}: the task was refunded but never "
            "charged (expected one capture, actual nothing)",
            f"[settle] organization {org}, task {a_debit.pk}: a refund linked to the task does "
            "not give tokens back (expected > 0, actual -1000)",
        ]
    )


def test_ledger_refund_writes_no_refund_under_a_tasks_key(
    organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    task = new_task(organization, status="CANCEL")
    before = snapshot(organization)
    with pytest.raises(ValidationFailed, match="ledger_refund_task"):
        ledger_refund(
            organization=organization,
            amount=PRICE,
            reason="goodwill",
            idempotency_key=task_refund_key(task.pk),
        )
    with pytest.raises(TypeError):
        ledger_refund(  # type: ignore[call-arg]
            organization=organization,
            amount=PRICE,
            reason="goodwill",
            idempotency_key="goodwill-1",
            task=task,
        )
    assert snapshot(organization) == before
    assert ledger_audit().ok
