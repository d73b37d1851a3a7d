"""An operator refunds a charged task: one refund entry linked to the task, at most once."""

from __future__ import annotations

import pytest

from apps.billing.ledger import (
    ledger_capture,
    ledger_hold,
    ledger_refund_task,
    ledger_release,
    task_refund_key,
)
from apps.billing.models import EntryKind, LedgerEntry
from apps.core.errors import ValidationFailed
from tests.factories import UserFactory

from .helpers import new_task, snapshot

pytestmark = pytest.mark.django_db


def test_a_charged_task_is_refunded_once_with_the_operator_and_reason(organization, fund):
    fund(organization, 20_000)
    operator = UserFactory(is_staff=True)
    task = new_task(organization, status="SUCCESS")
    ledger_hold(task=task, amount=14_000)
    ledger_capture(task=task)
    assert snapshot(organization) == (6_000, 0, 3)

    refund = ledger_refund_task(task=task, operator=operator, reason="Blurry result")
    assert (refund.kind, refund.delta_available, refund.delta_held) == (EntryKind.REFUND, 14_000, 0)
    assert (refund.task_id, refund.operator_id, refund.reason) == (
        task.pk,
        operator.pk,
        "Blurry result",
    )
    assert refund.idempotency_key == task_refund_key(task.pk)
    assert snapshot(organization) == (20_000, 0, 4)

    again = ledger_refund_task(task=task, operator=operator, reason="pressed twice")
    assert again.pk == refund.pk
    assert snapshot(organization) == (20_000, 0, 4)


def test_a_task_that_cost_nothing_cannot_be_refunded(organization, fund):
    fund(organization, 20_000)
    released = new_task(organization, status="FAILURE")
    ledger_hold(task=released, amount=14_000)
    ledger_release(task=released)
    never_held = new_task(organization, status="SUCCESS")
    before = snapshot(organization)
    for task in (released, never_held):
        with pytest.raises(ValidationFailed, match="not charged"):
            ledger_refund_task(task=task, operator=None, reason="goodwill")
    assert snapshot(organization) == before
    assert not LedgerEntry.objects.filter(kind=EntryKind.REFUND).exists()


def test_a_refund_needs_a_reason(organization, fund):
    fund(organization, 20_000)
    task = new_task(organization, status="SUCCESS")
    ledger_hold(task=task, amount=14_000)
    ledger_capture(task=task)
    before = snapshot(organization)
    with pytest.raises(ValidationFailed, match="reason"):
        ledger_refund_task(task=task, operator=None, reason="  ")
    assert snapshot(organization) == before
