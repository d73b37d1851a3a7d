"""Every movement the ledger knows, and every way it refuses one."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from apps.billing.ledger import (
    MAX_TOKENS,
    ledger_adjust,
    ledger_capture,
    ledger_clawback,
    ledger_grant_signup,
    ledger_hold,
    ledger_refund,
    ledger_release,
    ledger_topup,
    task_settle_key,
)
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.core.errors import InsufficientBalance, ValidationFailed
from tests.factories import OrganizationFactory, UserFactory

from .helpers import new_task, snapshot

pytestmark = pytest.mark.django_db


def entries(organization):
    return list(
        LedgerEntry.objects.filter(organization=organization)
        .order_by("id")
        .values_list("kind", "delta_available", "delta_held", "available_after", "held_after")
    )


# --- movements ----------------------------------------------------------------------------------


def test_topup_credits_available(organization):
    entry = ledger_topup(
        organization=organization, amount=50_000, idempotency_key="t1", reason="wire transfer"
    )
    assert (entry.kind, entry.amount, entry.reason) == (EntryKind.TOPUP, 50_000, "wire transfer")
    assert snapshot(organization) == (50_000, 0, 1)
    assert entries(organization) == [("topup", 50_000, 0, 50_000, 0)]


def test_signup_grant_uses_the_setting_once(organization, settings):
    settings.SIGNUP_GRANT_TOKENS = 70_000
    first = ledger_grant_signup(organization=organization)
    second = ledger_grant_signup(organization=organization)
    assert first is not None and second is not None
    assert first.pk == second.pk
    assert first.kind == EntryKind.SIGNUP_GRANT
    assert snapshot(organization) == (70_000, 0, 1)


def test_signup_grant_of_zero_writes_nothing(organization, settings):
    settings.SIGNUP_GRANT_TOKENS = 0
    assert ledger_grant_signup(organization=organization) is None
    assert snapshot(organization) == (0, 0, 0)


def test_hold_then_capture_charges_exactly_the_price(organization, fund):
    fund(organization, 20_000)
    task = new_task(organization)
    hold = ledger_hold(task=task, amount=14_000)
    assert (hold.kind, hold.amount, hold.task_id) == (EntryKind.HOLD, 14_000, task.pk)
    assert snapshot(organization) == (6_000, 14_000, 2)
    capture = ledger_capture(task=task)
    assert capture is not None
    assert (capture.kind, capture.amount, capture.idempotency_key) == (
        EntryKind.CAPTURE,
        14_000,
        task_settle_key(task.pk),
    )
    assert snapshot(organization) == (6_000, 0, 3)
    assert entries(organization)[1:] == [
        ("hold", -14_000, 14_000, 6_000, 14_000),
        ("capture", 0, -14_000, 6_000, 0),
    ]


def test_hold_then_release_costs_nothing(organization, fund):
    fund(organization, 20_000)
    task = new_task(organization)
    ledger_hold(task=task, amount=7_000)
    release = ledger_release(task=task)
    assert release is not None
    assert (release.kind, release.amount) == (EntryKind.RELEASE, 7_000)
    assert snapshot(organization) == (20_000, 0, 3)
    assert entries(organization)[-1] == ("release", 7_000, -7_000, 20_000, 0)


def test_a_free_task_holds_and_settles_zero(organization):
    task = new_task(organization)
    ledger_hold(task=task, amount=0)
    capture = ledger_capture(task=task)
    assert capture is not None and capture.amount == 0
    assert snapshot(organization) == (0, 0, 2)


def test_settle_is_exactly_once_capture_or_release(organization, fund):
    fund(organization, 28_000)
    task = new_task(organization)
    ledger_hold(task=task, amount=28_000)
    first = ledger_release(task=task)
    again = ledger_capture(task=task)
    third = ledger_release(task=task)
    assert first is not None
    assert again == first and third == first  # the earlier settle is returned
    assert snapshot(organization) == (28_000, 0, 3)


def test_settling_a_task_without_a_hold_moves_nothing(organization, fund):
    fund(organization, 1_000)
    task = new_task(organization)
    assert ledger_capture(task=task) is None
    assert ledger_release(task=task) is None
    assert snapshot(organization) == (1_000, 0, 1)


def test_hold_is_idempotent_per_task(organization, fund):
    fund(organization, 30_000)
    task = new_task(organization)
    first = ledger_hold(task=task, amount=14_000)
    second = ledger_hold(task=task, amount=14_000)
    assert first.pk == second.pk
    assert snapshot(organization) == (16_000, 14_000, 2)


def test_adjustment_records_operator_and_reason(organization, fund):
    operator = UserFactory(is_staff=True)
    fund(organization, 10_000)
    entry = ledger_adjust(
        organization=organization,
        amount=-4_000,
        reason="  duplicate credit  ",
        operator=operator,
        idempotency_key="adj-1",
    )
    assert (entry.kind, entry.amount, entry.operator, entry.reason) == (
        EntryKind.ADJUSTMENT,
        -4_000,
        operator,
        "duplicate credit",
    )
    assert snapshot(organization) == (6_000, 0, 2)


def test_refund_credits_or_debits_with_reason(organization, fund):
    fund(organization, 10_000)
    # A refund linked to a task goes through ledger_refund_task (test_task_refund.py).
    credit = ledger_refund(
        organization=organization, amount=3_500, reason="goodwill", idempotency_key="r1"
    )
    debit = ledger_refund(
        organization=organization, amount=-500, reason="chargeback", idempotency_key="r2"
    )
    assert (credit.kind, credit.amount, credit.task_id) == (EntryKind.REFUND, 3_500, None)
    assert (debit.kind, debit.amount) == (EntryKind.REFUND, -500)
    assert snapshot(organization) == (13_000, 0, 3)


def test_clawback_takes_at_most_what_is_available(organization, fund):
    fund(organization, 5_000)
    entry = ledger_clawback(
        organization=organization,
        amount=8_000,
        reason="Stripe refund",
        idempotency_key="cb-1",
        stripe_object_id="ch_1",
    )
    assert (entry.kind, entry.delta_available, entry.available_after) == (
        EntryKind.REFUND,
        -5_000,
        0,
    )
    assert entry.reason == (
        "Stripe refund (shortfall: 3000 of 8000 tokens were already spent and could not be "
        "clawed back)"
    )
    again = ledger_clawback(
        organization=organization, amount=8_000, reason="Stripe refund", idempotency_key="cb-1"
    )
    assert again.pk == entry.pk
    assert snapshot(organization) == (0, 0, 2)


def test_clawback_with_nothing_available_is_recorded_as_zero(organization):
    entry = ledger_clawback(
        organization=organization, amount=1_000, reason="refund", idempotency_key="cb-0"
    )
    assert (entry.delta_available, entry.available_after) == (0, 0)
    assert "shortfall: 1000 of 1000" in entry.reason
    assert snapshot(organization) == (0, 0, 1)


def _pending(organization) -> int:
    return Balance.objects.get(organization=organization).clawback_pending


def test_clawback_earmarks_held_tokens_and_takes_them_back_as_holds_are_released(
    organization, fund
):
    """A refund while tasks hold the purchased tokens: what is available goes now, what is
    held goes as the holds come back; a task that succeeds spends its part (forgiven)."""
    fund(organization, 10_000)
    first, second, third = (new_task(organization) for _ in range(3))
    for task, price in ((first, 3_000), (second, 3_000), (third, 2_000)):
        ledger_hold(task=task, amount=price)
    assert snapshot(organization) == (2_000, 8_000, 4)

    entry = ledger_clawback(
        organization=organization, amount=7_000, reason="Stripe refund", idempotency_key="cb-h"
    )
    assert (entry.delta_available, entry.available_after) == (-2_000, 0)
    assert entry.reason == (
        "Stripe refund (5000 of 7000 tokens are held by unfinished tasks and are taken back "
        "as their holds are released)"
    )
    assert _pending(organization) == 5_000

    ledger_release(task=first)  # 3,000 back, all of them owed
    assert snapshot(organization) == (0, 5_000, 7)
    assert _pending(organization) == 2_000
    taken = LedgerEntry.objects.get(organization=organization, idempotency_key__endswith="clawback")
    assert (taken.kind, taken.delta_available, taken.task_id) == (EntryKind.REFUND, -3_000, None)
    assert str(first.pk) in taken.reason

    ledger_capture(task=second)  # spent: 2,000 held is all that can still come back
    assert snapshot(organization) == (0, 2_000, 8)
    assert _pending(organization) == 2_000

    ledger_release(task=third)  # the last 2,000 owed
    assert snapshot(organization) == (0, 0, 10)
    assert _pending(organization) == 0
    # Settled once: a repeated release takes nothing more.
    ledger_release(task=third)
    assert snapshot(organization) == (0, 0, 10)


def test_a_capture_forgives_what_it_spends_of_a_pending_clawback(organization, fund):
    fund(organization, 4_000)
    task = new_task(organization)
    ledger_hold(task=task, amount=4_000)
    entry = ledger_clawback(
        organization=organization, amount=4_000, reason="refund", idempotency_key="cb-s"
    )
    assert entry.delta_available == 0
    assert _pending(organization) == 4_000
    ledger_capture(task=task)
    assert snapshot(organization) == (0, 0, 4)
    assert _pending(organization) == 0  # spent, as spent tokens always are
    later = new_task(organization)
    fund(organization, 1_000)
    ledger_hold(task=later, amount=1_000)
    ledger_release(task=later)  # a new purchase's hold comes back whole
    assert snapshot(organization) == (1_000, 0, 7)


def test_a_second_refund_earmarks_only_what_is_held_and_not_earmarked_yet(organization, fund):
    fund(organization, 5_000)
    task = new_task(organization)
    ledger_hold(task=task, amount=5_000)
    ledger_clawback(organization=organization, amount=3_000, reason="r1", idempotency_key="a")
    entry = ledger_clawback(
        organization=organization, amount=3_000, reason="r2", idempotency_key="b"
    )
    assert _pending(organization) == 5_000
    assert "2000 of 3000 tokens are held" in entry.reason
    assert "shortfall: 1000 of 3000" in entry.reason
    ledger_release(task=task)
    assert snapshot(organization) == (0, 0, 6)


def test_the_rest_of_a_smaller_capture_pays_a_pending_clawback(organization, fund):
    """An own account's task captures the platform fee and gives the rest of its hold back:
    the rest is released like any hold, so the pending clawback is taken out of it."""
    fund(organization, 1_000)
    task = new_task(organization)
    ledger_hold(task=task, amount=1_000)
    ledger_clawback(organization=organization, amount=1_000, reason="r", idempotency_key="o")
    ledger_capture(task=task, charge=100)
    assert snapshot(organization) == (0, 0, 6)  # top-up, hold, refund, capture, rest, refund
    assert _pending(organization) == 0
    assert LedgerEntry.objects.filter(
        organization=organization, kind=EntryKind.REFUND, delta_available=-900
    ).exists()


def test_a_pending_clawback_can_never_exceed_what_is_held(organization, fund):
    fund(organization, 100)
    with pytest.raises(IntegrityError), transaction.atomic():
        Balance.objects.filter(organization=organization).update(clawback_pending=1)


def test_idempotency_keys_are_per_organization(organization, other_organization):
    ledger_topup(organization=organization, amount=100, idempotency_key="same")
    ledger_topup(organization=other_organization, amount=200, idempotency_key="same")
    assert snapshot(organization) == (100, 0, 1)
    assert snapshot(other_organization) == (200, 0, 1)


def test_same_key_replays_the_first_entry(organization):
    first = ledger_topup(organization=organization, amount=100, idempotency_key="k")
    second = ledger_topup(organization=organization, amount=999, idempotency_key="k")
    assert second.pk == first.pk and second.amount == 100
    assert snapshot(organization) == (100, 0, 1)


def test_a_missing_balance_row_is_created_on_first_movement():
    organization = OrganizationFactory()
    Balance.objects.filter(organization=organization).delete()
    ledger_topup(organization=organization, amount=10, idempotency_key="first")
    assert snapshot(organization) == (10, 0, 1)


def test_balance_updated_at_moves_with_each_entry(organization):
    before = Balance.objects.get(organization=organization).updated_at
    ledger_topup(organization=organization, amount=10, idempotency_key="x")
    assert Balance.objects.get(organization=organization).updated_at > before


# --- denied paths: nothing moves ------------------------------------------------------------------


def test_insufficient_balance_creates_nothing(organization, fund):
    fund(organization, 13_999)
    task = new_task(organization)
    before = snapshot(organization)
    with pytest.raises(InsufficientBalance) as excinfo:
        ledger_hold(task=task, amount=14_000)
    assert excinfo.value.details == {"required": 14_000, "available": 13_999}
    assert excinfo.value.http_status == 402
    assert snapshot(organization) == before == (13_999, 0, 1)


def test_negative_adjustment_below_zero_is_refused(organization, fund):
    fund(organization, 100)
    with pytest.raises(InsufficientBalance):
        ledger_adjust(
            organization=organization,
            amount=-101,
            reason="too much",
            operator=None,
            idempotency_key="a",
        )
    assert snapshot(organization) == (100, 0, 1)


def test_refund_debit_below_zero_is_refused(organization, fund):
    fund(organization, 100)
    with pytest.raises(InsufficientBalance):
        ledger_refund(organization=organization, amount=-101, reason="r", idempotency_key="r")
    assert snapshot(organization) == (100, 0, 1)


@pytest.mark.parametrize("amount", [0, -1, -50_000])
def test_topup_must_be_positive(organization, fund, amount):
    fund(organization, 100)
    with pytest.raises(ValidationFailed):
        ledger_topup(organization=organization, amount=amount, idempotency_key="t")
    assert snapshot(organization) == (100, 0, 1)


@pytest.mark.parametrize("amount", [1.5, "100", True, None])
def test_amounts_must_be_whole_tokens(organization, fund, amount):
    fund(organization, 100)
    task = new_task(organization)
    with pytest.raises(ValidationFailed):
        ledger_topup(organization=organization, amount=amount, idempotency_key="t")
    with pytest.raises(ValidationFailed):
        ledger_hold(task=task, amount=amount)
    assert snapshot(organization) == (100, 0, 1)


def test_amounts_beyond_the_cap_are_refused(organization):
    with pytest.raises(ValidationFailed):
        ledger_topup(organization=organization, amount=MAX_TOKENS + 1, idempotency_key="t")
    assert snapshot(organization) == (0, 0, 0)


def test_negative_hold_is_refused(organization, fund):
    fund(organization, 100)
    task = new_task(organization)
    with pytest.raises(ValidationFailed):
        ledger_hold(task=task, amount=-1)
    assert snapshot(organization) == (100, 0, 1)


def test_zero_adjustment_is_refused(organization, fund):
    fund(organization, 100)
    with pytest.raises(ValidationFailed):
        ledger_adjust(
            organization=organization, amount=0, reason="r", operator=None, idempotency_key="a"
        )
    assert snapshot(organization) == (100, 0, 1)


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_adjustment_without_reason_is_refused(organization, fund, reason):
    fund(organization, 100)
    with pytest.raises(ValidationFailed):
        ledger_adjust(
            organization=organization,
            amount=5,
            reason=reason,
            operator=None,
            idempotency_key="a",
        )
    assert snapshot(organization) == (100, 0, 1)


@pytest.mark.parametrize(("amount", "reason"), [(0, "r"), (5, ""), (-5, "  ")])
def test_refund_needs_amount_and_reason(organization, fund, amount, reason):
    fund(organization, 100)
    with pytest.raises(ValidationFailed):
        ledger_refund(organization=organization, amount=amount, reason=reason, idempotency_key="r")
    assert snapshot(organization) == (100, 0, 1)


@pytest.mark.parametrize(("amount", "reason"), [(0, "r"), (-5, "r"), (5, "")])
def test_clawback_needs_positive_amount_and_reason(organization, fund, amount, reason):
    fund(organization, 100)
    with pytest.raises(ValidationFailed):
        ledger_clawback(
            organization=organization, amount=amount, reason=reason, idempotency_key="c"
        )
    assert snapshot(organization) == (100, 0, 1)


def test_an_empty_idempotency_key_is_refused(organization):
    with pytest.raises(ValidationFailed):
        ledger_topup(organization=organization, amount=5, idempotency_key="")
    assert snapshot(organization) == (0, 0, 0)


def test_a_refused_movement_leaves_the_callers_transaction_usable(organization, fund):
    fund(organization, 100)
    task = new_task(organization)
    with transaction.atomic():
        with pytest.raises(InsufficientBalance):
            ledger_hold(task=task, amount=101)
        ledger_hold(task=task, amount=100)
    assert snapshot(organization) == (0, 100, 2)


def test_the_database_refuses_a_negative_balance(organization):
    # The CHECK constraint is the last line of defence, for code that bypasses the ledger.
    with pytest.raises(IntegrityError), transaction.atomic():
        Balance.objects.filter(organization=organization).update(available=-1)
    assert snapshot(organization) == (0, 0, 0)


def test_the_database_refuses_a_duplicate_idempotency_key(organization):
    entry = ledger_topup(organization=organization, amount=5, idempotency_key="dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            organization=organization,
            kind=EntryKind.TOPUP,
            delta_available=5,
            available_after=10,
            held_after=0,
            idempotency_key="dup",
        )
    assert list(LedgerEntry.objects.filter(organization=organization)) == [entry]
