"""The only code that moves tokens. See ``LedgerEntry`` for the invariants it keeps.

Every movement runs in one transaction that (1) locks the organization's balance row, (2) returns
the earlier entry if the idempotency key was used already, (3) checks the balance stays
non-negative, (4) updates the balance and (5) appends the entry. The row lock serialises
movements of one organization; the unique constraint on the key is the backstop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from apps.accounts.models import Organization
from apps.core.errors import InsufficientBalance, ValidationFailed

from .models import Balance, EntryKind, LedgerEntry

if TYPE_CHECKING:
    from apps.accounts.models import User
    from apps.tasks.models import Task


def balance_initialize(*, organization: Organization) -> Balance:
    balance, _ = Balance.objects.get_or_create(organization=organization)
    return balance


def _tokens(value: int, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{what} must be a whole number of tokens.")
    return value


def _post(
    *,
    organization_id: int,
    kind: str,
    delta_available: int,
    delta_held: int,
    idempotency_key: str,
    task: Task | None = None,
    stripe_object_id: str = "",
    operator: User | None = None,
    reason: str = "",
) -> LedgerEntry:
    """Append one entry and apply it to the balance, exactly once per idempotency key."""
    if not idempotency_key:
        raise ValidationFailed("A ledger movement needs an idempotency key.")
    with transaction.atomic():
        balance = (
            Balance.objects.select_for_update().filter(organization_id=organization_id).first()
        )
        if balance is None:
            Balance.objects.get_or_create(organization_id=organization_id)
            balance = Balance.objects.select_for_update().get(organization_id=organization_id)
        existing = LedgerEntry.objects.filter(
            organization_id=organization_id, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return existing
        available = balance.available + delta_available
        held = balance.held + delta_held
        if available < 0:
            raise InsufficientBalance(
                f"Insufficient balance: {-delta_available} tokens needed, "
                f"{balance.available} available.",
                details={"required": -delta_available, "available": balance.available},
            )
        if held < 0:
            # Only a bug could get here: a capture or release larger than what is held.
            raise ValidationFailed("The ledger cannot release more tokens than are held.")
        Balance.objects.filter(organization_id=organization_id).update(
            available=available, held=held
        )
        return LedgerEntry.objects.create(
            organization_id=organization_id,
            kind=kind,
            delta_available=delta_available,
            delta_held=delta_held,
            available_after=available,
            held_after=held,
            idempotency_key=idempotency_key,
            task=task,
            stripe_object_id=stripe_object_id,
            operator=operator,
            reason=reason,
        )


def ledger_grant_signup(*, organization: Organization) -> LedgerEntry | None:
    amount = int(settings.SIGNUP_GRANT_TOKENS)
    if amount <= 0:
        return None
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.SIGNUP_GRANT,
        delta_available=amount,
        delta_held=0,
        idempotency_key="signup-grant",
        reason="Sign-up grant",
    )


def ledger_topup(
    *,
    organization: Organization,
    amount: int,
    idempotency_key: str,
    stripe_object_id: str = "",
    reason: str = "",
    operator: User | None = None,
) -> LedgerEntry:
    amount = _tokens(amount, what="A top-up")
    if amount <= 0:
        raise ValidationFailed("A top-up must be a positive number of tokens.")
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.TOPUP,
        delta_available=amount,
        delta_held=0,
        idempotency_key=idempotency_key,
        stripe_object_id=stripe_object_id,
        reason=reason,
        operator=operator,
    )


def ledger_adjust(
    *,
    organization: Organization,
    amount: int,
    reason: str,
    operator: User | None,
    idempotency_key: str,
) -> LedgerEntry:
    """An operator's correction, positive or negative. It may not take available below zero."""
    amount = _tokens(amount, what="An adjustment")
    if amount == 0:
        raise ValidationFailed("An adjustment must not be zero.")
    if not reason.strip():
        raise ValidationFailed("An adjustment needs a reason.")
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.ADJUSTMENT,
        delta_available=amount,
        delta_held=0,
        idempotency_key=idempotency_key,
        operator=operator,
        reason=reason.strip(),
    )


def ledger_refund(
    *,
    organization: Organization,
    amount: int,
    reason: str,
    idempotency_key: str,
    task: Task | None = None,
    stripe_object_id: str = "",
    operator: User | None = None,
) -> LedgerEntry:
    """A refund: positive credits the customer (a task refund), negative claws back a top-up."""
    amount = _tokens(amount, what="A refund")
    if amount == 0:
        raise ValidationFailed("A refund must not be zero.")
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.REFUND,
        delta_available=amount,
        delta_held=0,
        idempotency_key=idempotency_key,
        task=task,
        stripe_object_id=stripe_object_id,
        operator=operator,
        reason=reason,
    )


def task_hold_key(task_id: object) -> str:
    return f"task:{task_id}:hold"


def task_settle_key(task_id: object) -> str:
    # Capture and release share one key: the unique constraint makes them mutually exclusive.
    return f"task:{task_id}:settle"


def ledger_hold(*, task: Task, amount: int) -> LedgerEntry:
    """Reserve a task's price. Must run in the transaction that accepts the task."""
    amount = _tokens(amount, what="A hold")
    if amount < 0:
        raise ValidationFailed("A hold cannot be negative.")
    return _post(
        organization_id=task.organization_id,
        kind=EntryKind.HOLD,
        delta_available=-amount,
        delta_held=amount,
        idempotency_key=task_hold_key(task.pk),
        task=task,
    )


def _held_for(task: Task) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(
        organization_id=task.organization_id, idempotency_key=task_hold_key(task.pk)
    ).first()


def _settle(*, task: Task, kind: str) -> LedgerEntry | None:
    hold = _held_for(task)
    if hold is None:
        return None  # test keys and never-queued MODAL tasks hold nothing
    amount = hold.delta_held
    return _post(
        organization_id=task.organization_id,
        kind=kind,
        delta_available=amount if kind == EntryKind.RELEASE else 0,
        delta_held=-amount,
        idempotency_key=task_settle_key(task.pk),
        task=task,
    )


def ledger_capture(*, task: Task) -> LedgerEntry | None:
    """Charge a succeeded task its held price. A no-op if it was settled already."""
    return _settle(task=task, kind=EntryKind.CAPTURE)


def ledger_release(*, task: Task) -> LedgerEntry | None:
    """Give a failed or cancelled task's hold back. A no-op if it was settled already."""
    return _settle(task=task, kind=EntryKind.RELEASE)
