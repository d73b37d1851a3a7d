"""The only code that moves tokens. See ``LedgerEntry`` for the invariants it keeps.

Every movement runs in one transaction (a savepoint when the caller already has one) that

1. takes a ``FOR KEY SHARE`` lock on the organization row, then ``FOR UPDATE`` on its balance row,
2. returns the earlier entry if the idempotency key was used already,
3. checks the balance stays non-negative,
4. updates the balance and
5. appends the entry.

The balance row lock serialises all movements of one organization, so step 2 sees every
committed entry (READ COMMITTED takes a fresh snapshot per statement, after the lock was granted)
and entry ids of one organization increase in the order the movements happened, which is what
``ledger_check`` relies on to verify the ``available_after``/``held_after`` chain. The unique
constraint on ``(organization, idempotency_key)`` is the backstop should any code bypass the lock.

Lock order, to stay deadlock-free with callers: organization row, then balance row, and the
balance row is the last lock a movement takes. Inserting an entry needs a KEY SHARE lock on the
organization (foreign key check); taking it up front means a transaction that locks the
organization ``FOR UPDATE`` (a tier check, say) and then moves tokens can never wait for us while
we wait for it. Callers that lock the organization should prefer ``select_for_update(no_key=True)``,
which does not conflict with KEY SHARE at all.

The hold of a new task, the hot path of every submit, is the one exception in shape, not in
effect: its caller already holds the organization's row lock, and on PostgreSQL steps 1 to 5 are
one statement (a conditional ``UPDATE … RETURNING`` of the balance feeding the entry's
``INSERT``; see ``ledger_hold``). The balance row lock is still what orders the entries.

A crash anywhere before commit rolls back the balance change and the entry together; there is no
state in between.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from apps.accounts.models import Organization
from apps.core.db import prepared_cursor
from apps.core.errors import InsufficientBalance, ValidationFailed

from .events import balance_changed, balance_low_threshold
from .models import Balance, EntryKind, LedgerEntry

if TYPE_CHECKING:
    from apps.accounts.models import User
    from apps.tasks.models import Task

#: No single movement may exceed this (about 28.5 billion CNY). Keeps every sum far away from
#: the 64-bit limit of the columns, so a typo in the admin cannot overflow a balance.
MAX_TOKENS = 10**15


def balance_initialize(*, organization: Organization) -> Balance:
    balance, _ = Balance.objects.get_or_create(organization=organization)
    return balance


def _tokens(value: int, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{what} must be a whole number of tokens.")
    if abs(value) > MAX_TOKENS:
        raise ValidationFailed(f"{what} cannot exceed {MAX_TOKENS} tokens.")
    return value


def _reason(value: str, *, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationFailed(f"{what} needs a reason.")
    return value


def _lock_balance(organization_id: int) -> Balance:
    """Lock the organization's balance row (creating it if needed) in the documented order."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {Organization._meta.db_table} WHERE id = %s FOR KEY SHARE",  # noqa: S608
                [organization_id],
            )
    balance = Balance.objects.select_for_update().filter(organization_id=organization_id).first()
    if balance is None:
        Balance.objects.get_or_create(organization_id=organization_id)
        balance = Balance.objects.select_for_update().get(organization_id=organization_id)
    return balance


def _existing(organization_id: int, idempotency_key: str) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(
        organization_id=organization_id, idempotency_key=idempotency_key
    ).first()


def _apply(
    *,
    balance: Balance,
    kind: str,
    delta_available: int,
    delta_held: int,
    idempotency_key: str,
    task: Task | None = None,
    stripe_object_id: str = "",
    operator: User | None = None,
    reason: str = "",
    clawback_pending: int | None = None,
) -> LedgerEntry:
    """Apply one movement to a balance row locked by the current transaction.

    ``clawback_pending``: the balance's new pending clawback (default: as it is). It never
    exceeds what stays held: a capture that spends held tokens earmarked for a clawback
    forgives them, as a clawback forgives spent tokens."""
    available = balance.available + delta_available
    held = balance.held + delta_held
    pending = balance.clawback_pending if clawback_pending is None else clawback_pending
    pending = min(pending, max(held, 0))
    if available < 0:
        raise InsufficientBalance(
            f"Insufficient balance: {-delta_available} tokens needed, "
            f"{balance.available} available.",
            details={"required": -delta_available, "available": balance.available},
        )
    if held < 0:
        # Only a bug could get here: a capture or release larger than what is held.
        raise ValidationFailed("The ledger cannot release more tokens than are held.")
    Balance.objects.filter(organization_id=balance.organization_id).update(
        available=available, held=held, clawback_pending=pending, updated_at=timezone.now()
    )
    before = balance.available
    balance.available, balance.held, balance.clawback_pending = available, held, pending
    balance_changed(
        organization_id=balance.organization_id, before=before, available=available, held=held
    )
    return LedgerEntry.objects.create(
        organization_id=balance.organization_id,
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
        balance = _lock_balance(organization_id)
        existing = _existing(organization_id, idempotency_key)
        if existing is not None:
            return existing
        return _apply(
            balance=balance,
            kind=kind,
            delta_available=delta_available,
            delta_held=delta_held,
            idempotency_key=idempotency_key,
            task=task,
            stripe_object_id=stripe_object_id,
            operator=operator,
            reason=reason,
        )


def ledger_grant_signup(*, organization: Organization) -> LedgerEntry | None:
    amount = _tokens(int(settings.SIGNUP_GRANT_TOKENS), what="The sign-up grant")
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


def adjustment_key() -> str:
    """A fresh idempotency key for an operator adjustment (one per submitted form)."""
    return f"adjust:{uuid.uuid4()}"


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
    reason = _reason(reason, what="An adjustment")
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.ADJUSTMENT,
        delta_available=amount,
        delta_held=0,
        idempotency_key=idempotency_key,
        operator=operator,
        reason=reason,
    )


#: The idempotency keys of a task's own movements (hold, settle, rest, refund, clawback): only
#: this module's task functions write them, never a caller's key.
TASK_KEY_PREFIX = "task:"
#: The end of a ``task:<id>:clawback`` key (``task_clawback_key``).
CLAWBACK_KEY_SUFFIX = ":clawback"


def ledger_refund(
    *,
    organization: Organization,
    amount: int,
    reason: str,
    idempotency_key: str,
    stripe_object_id: str = "",
    operator: User | None = None,
) -> LedgerEntry:
    """A refund not linked to a task: positive credits the customer, negative claws back a
    top-up. A task's price is given back only by :func:`ledger_refund_task`, which checks what
    was captured; so this function takes no task, and refuses the ledger's task keys (a refund
    keyed ``task:<id>:refund`` here would pass for that task's refund)."""
    amount = _tokens(amount, what="A refund")
    if amount == 0:
        raise ValidationFailed("A refund must not be zero.")
    reason = _reason(reason, what="A refund")
    if (idempotency_key or "").startswith(TASK_KEY_PREFIX):
        raise ValidationFailed(
            f"A refund's idempotency key cannot start with {TASK_KEY_PREFIX!r}: a task's "
            "refund goes through ledger_refund_task."
        )
    return _post(
        organization_id=organization.pk,
        kind=EntryKind.REFUND,
        delta_available=amount,
        delta_held=0,
        idempotency_key=idempotency_key,
        stripe_object_id=stripe_object_id,
        operator=operator,
        reason=reason,
    )


def ledger_clawback(
    *,
    organization: Organization,
    amount: int,
    reason: str,
    idempotency_key: str,
    stripe_object_id: str = "",
) -> LedgerEntry:
    """Take back ``amount`` tokens of a refunded purchase, never driving available negative.

    What is available is taken now. What unfinished tasks hold is not spent yet: that part is
    earmarked (``Balance.clawback_pending``) and taken back as their holds are released
    (``_settle``), so cancelling the tasks does not hand the refunded tokens back. Tokens
    already spent (captured) cannot be taken back; that shortfall is written into the entry's
    reason so an operator can follow up. Computed under the balance lock, so a hold racing
    with the refund can neither fail the clawback nor be failed by it. A clawback of 0 (nothing
    left to take now) is still recorded: the refund happened and the ledger says so.
    """
    return _clawback(
        organization=organization,
        kind=EntryKind.REFUND,
        amount=amount,
        reason=reason,
        idempotency_key=idempotency_key,
        stripe_object_id=stripe_object_id,
    )


def _clawback(
    *,
    organization: Organization,
    kind: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    stripe_object_id: str,
) -> LedgerEntry:
    amount = _tokens(amount, what="A clawback")
    if amount <= 0:
        raise ValidationFailed("A clawback must be a positive number of tokens.")
    reason = _reason(reason, what="A clawback")
    if not idempotency_key:
        raise ValidationFailed("A ledger movement needs an idempotency key.")
    with transaction.atomic():
        balance = _lock_balance(organization.pk)
        existing = _existing(organization.pk, idempotency_key)
        if existing is not None:
            return existing
        taken = min(amount, balance.available)
        # Held tokens not earmarked already by an earlier refund.
        earmarked = min(amount - taken, max(balance.held - balance.clawback_pending, 0))
        spent = amount - taken - earmarked
        if earmarked:
            reason = (
                f"{reason} ({earmarked} of {amount} tokens are held by unfinished tasks and "
                f"are taken back as their holds are released)"
            )
        if spent:
            reason = (
                f"{reason} (shortfall: {spent} of {amount} tokens were already spent "
                f"and could not be clawed back)"
            )
        return _apply(
            balance=balance,
            kind=kind,
            delta_available=-taken,
            delta_held=0,
            idempotency_key=idempotency_key,
            stripe_object_id=stripe_object_id,
            reason=reason,
            clawback_pending=balance.clawback_pending + earmarked,
        )


#: The idempotency keys of a dispute's two movements (one each per dispute: Stripe withdraws a
#: dispute's funds once and reinstates them at most once). ``ledger_check`` reads them.
DISPUTE_KEY_PREFIX = "stripe:dispute:"
DISPUTE_WITHDRAWN = ":withdrawn"
DISPUTE_REINSTATED = ":reinstated"


def dispute_withdrawal_key(dispute_id: str) -> str:
    return f"{DISPUTE_KEY_PREFIX}{dispute_id}{DISPUTE_WITHDRAWN}"


def dispute_reinstatement_key(dispute_id: str) -> str:
    return f"{DISPUTE_KEY_PREFIX}{dispute_id}{DISPUTE_REINSTATED}"


def ledger_dispute_withdraw(
    *, organization: Organization, dispute_id: str, amount: int, reason: str
) -> LedgerEntry:
    """Take back ``amount`` tokens of a purchase whose payment a dispute withdrew: exactly as
    :func:`ledger_clawback` takes back a refund (available now, what unfinished tasks hold as
    they are released, the spent rest a shortfall in the reason), as a ``dispute`` entry keyed
    ``stripe:dispute:<dispute id>:withdrawn``, at most once per dispute."""
    if not dispute_id:
        raise ValidationFailed("A dispute's withdrawal needs the dispute's id.")
    return _clawback(
        organization=organization,
        kind=EntryKind.DISPUTE,
        amount=amount,
        reason=reason,
        idempotency_key=dispute_withdrawal_key(dispute_id),
        stripe_object_id=dispute_id,
    )


def _collections_since(organization_id: int, entry_id: int) -> int:
    """Tokens releases took for pending clawbacks (``task:<id>:clawback``) after ``entry_id``."""
    collected = LedgerEntry.objects.filter(
        organization_id=organization_id,
        id__gt=entry_id,
        kind=EntryKind.REFUND,
        idempotency_key__startswith=TASK_KEY_PREFIX,
        idempotency_key__endswith=CLAWBACK_KEY_SUFFIX,
    ).aggregate(total=models.Sum("delta_available"))["total"]
    return -(collected or 0)


#: How many of the entries before a dispute's withdrawal its reinstatement reads to tell that
#: an earlier refund's earmark was no longer pending (``_other_clawbacks``).
EARMARK_LOOKBACK = 1_000


def _other_clawbacks(organization_id: int, withdrawal: LedgerEntry) -> bool:
    """Whether anything but ``withdrawal`` may have earmarked held tokens of the organization:
    another refund's or dispute's clawback (or any negative refund, to be safe), before or
    after it. The pending clawback is one figure per balance, so only without them is all of
    it, and every collection since the withdrawal, the withdrawal's own.

    One before it is left out when an entry from it up to the withdrawal left nothing held:
    the pending clawback never exceeds what is held, so nothing it earmarked was still pending
    (an old refund settled long ago must not keep a won dispute's earmark taking tokens). Only
    the withdrawal's latest ``EARMARK_LOOKBACK`` entries are read for it (under the balance
    lock; a busy organization may never hold nothing): not found there, it may share."""
    others = (
        LedgerEntry.objects.filter(
            organization_id=organization_id,
            task__isnull=True,
            delta_available__lte=0,
            kind__in=(EntryKind.REFUND, EntryKind.DISPUTE),
        )
        .exclude(pk=withdrawal.pk)
        .exclude(idempotency_key__startswith=TASK_KEY_PREFIX)
        .exclude(idempotency_key__endswith=DISPUTE_REINSTATED)
    )
    if others.filter(pk__gt=withdrawal.pk).exists():
        return True
    last = others.filter(pk__lt=withdrawal.pk).aggregate(last=models.Max("pk"))["last"]
    if last is None:
        return False
    held = LedgerEntry.objects.filter(
        organization_id=organization_id, pk__gte=last, pk__lt=withdrawal.pk
    ).order_by("-pk")  # ``ledger_org_recent``, backwards from the withdrawal
    return 0 not in held.values_list("held_after", flat=True)[:EARMARK_LOOKBACK]


def ledger_dispute_reinstate(
    *,
    organization: Organization,
    dispute_id: str,
    owed_before: int,
    owed_after: int,
    reason: str,
) -> LedgerEntry:
    """Give back what a dispute's withdrawal took when Stripe reinstates its funds, never more:
    a ``dispute`` entry keyed ``stripe:dispute:<dispute id>:reinstated``, at most once per
    dispute.

    ``owed_before``/``owed_after``: the tokens the dispute takes back from its purchase before
    and after the reinstatement (``owed_after`` is 0 when all of it is reinstated, more when
    only part is, or when a refund of the same purchase now owes them). What the withdrawal
    took is what its entry took from available, plus, when nothing else earmarked held tokens
    of the organization (``_other_clawbacks``), what releases took since for its earmark; what
    it still has earmarked is in ``Balance.clawback_pending``. The tokens it took beyond
    ``owed_after`` come back to available, and its earmark beyond what is still owed is
    dropped from the pending clawback. Tokens it never took (spent before the withdrawal, or
    earmarked alongside other refunds, whose share cannot be told apart) are not given back:
    the entry's reason says how many, for an operator to judge.
    """
    owed_before = _tokens(owed_before, what="A reinstatement")
    owed_after = _tokens(owed_after, what="A reinstatement")
    if not 0 <= owed_after < owed_before:
        raise ValidationFailed("A reinstatement must lower what the dispute takes back.")
    reason = _reason(reason, what="A reinstatement")
    key = dispute_reinstatement_key(dispute_id)
    with transaction.atomic():
        balance = _lock_balance(organization.pk)
        existing = _existing(organization.pk, key)
        if existing is not None:
            return existing
        withdrawal = _existing(organization.pk, dispute_withdrawal_key(dispute_id))
        if withdrawal is None or withdrawal.kind != EntryKind.DISPUTE:
            raise ValidationFailed(
                f"Dispute {dispute_id} took nothing back, so there is nothing to reinstate."
            )
        paid = -withdrawal.delta_available
        pending = 0
        if not _other_clawbacks(organization.pk, withdrawal):
            paid += _collections_since(organization.pk, withdrawal.pk)
            pending = balance.clawback_pending
        given = max(paid - owed_after, 0)
        still_pending = min(pending, max(owed_after - paid, 0))
        dropped = pending - still_pending
        reinstated = owed_before - owed_after
        if dropped:
            reason = (
                f"{reason} ({dropped} tokens still held by unfinished tasks are no longer "
                f"taken back as their holds are released)"
            )
        if given + dropped < reinstated:
            reason = (
                f"{reason} ({reinstated - given - dropped} of {reinstated} tokens were never "
                f"taken back by the withdrawal and are not given back)"
            )
        return _apply(
            balance=balance,
            kind=EntryKind.DISPUTE,
            delta_available=given,
            delta_held=0,
            idempotency_key=key,
            stripe_object_id=dispute_id,
            reason=reason,
            clawback_pending=balance.clawback_pending - dropped,
        )


def task_hold_key(task_id: object) -> str:
    return f"task:{task_id}:hold"


def task_settle_key(task_id: object) -> str:
    # Capture and release share one key: the unique constraint makes them mutually exclusive.
    return f"task:{task_id}:settle"


def task_refund_key(task_id: object) -> str:
    # One refund per task: the unique key makes a second press of the button a no-op.
    return f"task:{task_id}:refund"


def ledger_refund_task(*, task: Task, operator: User | None, reason: str) -> LedgerEntry:
    """Give a charged task's price back: a refund entry linked to the task, at most once.

    Only a task whose hold was captured can be refunded (a released or test task cost nothing).
    A second call returns the first refund and moves nothing. The amount refunded is kept on the
    task (``Task.tokens_refunded``) in the same transaction, so what the task shows as charged
    (``Task.tokens_charged``: TTAPI's ``quota``, the dashboard) is what the ledger says it cost.
    """
    reason = _reason(reason, what="A task refund")
    with transaction.atomic():
        balance = _lock_balance(task.organization_id)
        existing = _existing(task.organization_id, task_refund_key(task.pk))
        if existing is not None:
            return existing
        settled = _existing(task.organization_id, task_settle_key(task.pk))
        if settled is None or settled.kind != EntryKind.CAPTURE or settled.delta_held == 0:
            raise ValidationFailed(
                f"Task {task.pk} was not charged, so there is nothing to refund."
            )
        refund = _apply(
            balance=balance,
            kind=EntryKind.REFUND,
            delta_available=-settled.delta_held,
            delta_held=0,
            idempotency_key=task_refund_key(task.pk),
            task=task,
            operator=operator,
            reason=reason,
        )
        # The task's own class: the ledger is a leaf and imports no task model at runtime.
        type(task)._default_manager.filter(pk=task.pk).update(
            tokens_refunded=refund.delta_available
        )
        task.tokens_refunded = refund.delta_available
        return refund


#: The hold of a task: the database function ``ledger_task_hold`` (migration ``billing.0009``),
#: the ledger's one statement for it, which the submit's one-statement acceptance calls too.
_HOLD_SQL = (
    "SELECT hold_id, hold_available, hold_held FROM ledger_task_hold("
    "%(organization)s, %(amount)s, %(key)s, %(kind)s, %(task)s, %(now)s)"
)


def ledger_hold_arguments(*, task: Task, amount: int) -> dict[str, Any]:
    """What the database's ``tasks_task_accept`` passes to ``ledger_task_hold`` for ``task``'s
    hold (the submit's one-statement acceptance, outside a transaction): the amount checked as
    :func:`ledger_hold` checks it, the hold's key and kind, and the ``balance.low`` threshold
    (a hold that crosses it, or that moves nothing, is refused there and the caller takes the
    transaction path through :func:`ledger_hold`). Only this module names them."""
    amount = _tokens(amount, what="A hold")
    if amount < 0:
        raise ValidationFailed("A hold cannot be negative.")
    return {
        "hold_amount": amount,
        "hold_key": task_hold_key(task.pk),
        "hold_kind": str(EntryKind.HOLD),
        "low_threshold": balance_low_threshold(),
    }


def ledger_hold(*, task: Task, amount: int) -> LedgerEntry:
    """Reserve a task's price. Must run in the transaction that accepts the task, which holds
    the organization's row lock (``accept`` takes it), so the lock order stays the documented
    one: organization, then balance.

    On PostgreSQL the hold is one prepared statement (``apps.core.db.prepared_cursor``) calling
    the database function ``ledger_task_hold`` (migration ``billing.0009``): a conditional
    ``UPDATE … RETURNING`` of the balance (enough available, no hold of this task yet) feeding
    the ledger row's ``INSERT``.
    When it moves nothing (no balance row yet, too little available, or a hold already made)
    the general path locks, looks and answers exactly: the earlier entry, or
    ``InsufficientBalance`` with the figures.

    A price of 0 (a free promotion) still records a hold of 0, so the task settles like any other.
    """
    amount = _tokens(amount, what="A hold")
    if amount < 0:
        raise ValidationFailed("A hold cannot be negative.")
    key = task_hold_key(task.pk)
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        now = timezone.now()
        # Prepared on the connection (``apps.core.db``): each later hold only executes the plan.
        with prepared_cursor() as cursor:
            cursor.execute(
                _HOLD_SQL,
                {
                    "amount": amount,
                    "organization": task.organization_id,
                    "key": key,
                    "kind": EntryKind.HOLD,
                    "task": task.pk,
                    "now": now,
                },
            )
            row = cursor.fetchone()
        if row is not None:
            entry_id, available, held = row
            balance_changed(
                organization_id=task.organization_id,
                before=available + amount,
                available=available,
                held=held,
            )
            entry = LedgerEntry(
                id=entry_id,
                organization_id=task.organization_id,
                kind=EntryKind.HOLD,
                delta_available=-amount,
                delta_held=amount,
                available_after=available,
                held_after=held,
                idempotency_key=key,
                task=task,
                created_at=now,
            )
            entry._state.adding = False
            return entry
    return _post(
        organization_id=task.organization_id,
        kind=EntryKind.HOLD,
        delta_available=-amount,
        delta_held=amount,
        idempotency_key=key,
        task=task,
    )


def task_rest_key(task_id: object) -> str:
    # The part of a hold a smaller capture gives back (a task its own account ran).
    return f"task:{task_id}:rest"


def task_clawback_key(task_id: object) -> str:
    # A pending clawback taken out of what the task's settle released.
    return f"task:{task_id}{CLAWBACK_KEY_SUFFIX}"


def _release(
    *, balance: Balance, task: Task, amount: int, idempotency_key: str, reason: str = ""
) -> LedgerEntry:
    """Give ``amount`` held tokens of ``task`` back to available and take the balance's pending
    clawback (``ledger_clawback``) out of them, in the caller's transaction: the release
    lowers the pending clawback by what the following refund entry takes, so the balance never
    shows more pending than held, even between the two."""
    owed = min(balance.clawback_pending, amount)
    released = _apply(
        balance=balance,
        kind=EntryKind.RELEASE,
        delta_available=amount,
        delta_held=-amount,
        idempotency_key=idempotency_key,
        task=task,
        reason=reason,
        clawback_pending=balance.clawback_pending - owed,
    )
    if owed > 0:
        _apply(
            balance=balance,
            kind=EntryKind.REFUND,
            delta_available=-owed,
            delta_held=0,
            idempotency_key=task_clawback_key(task.pk),
            reason=f"Refunded or disputed purchase: {owed} tokens held by task {task.pk} when "
            "the purchase was refunded or disputed, taken back as its hold was released.",
        )
    return released


def _settle(*, task: Task, kind: str, charge: int | None = None) -> LedgerEntry | None:
    with transaction.atomic():
        # Lock first, then look: both the hold and an earlier settle are read under the lock.
        balance = _lock_balance(task.organization_id)
        settled = _existing(task.organization_id, task_settle_key(task.pk))
        if settled is not None:
            return settled
        hold = _existing(task.organization_id, task_hold_key(task.pk))
        if hold is None:
            return None  # test keys and never-queued MODAL tasks hold nothing
        amount = hold.delta_held
        if kind == EntryKind.CAPTURE and charge is not None and charge < amount:
            # Capture the charge, then give the rest of the hold back: two entries under the
            # one balance lock, in one transaction, so there is no state with only one.
            captured = _apply(
                balance=balance,
                kind=EntryKind.CAPTURE,
                delta_available=0,
                delta_held=-charge,
                idempotency_key=task_settle_key(task.pk),
                task=task,
            )
            _release(
                balance=balance,
                task=task,
                amount=amount - charge,
                idempotency_key=task_rest_key(task.pk),
                reason="The rest of the hold: the organization's own upstream account ran it "
                "(platform fee charged).",
            )
            return captured
        if kind == EntryKind.RELEASE:
            return _release(
                balance=balance, task=task, amount=amount, idempotency_key=task_settle_key(task.pk)
            )
        return _apply(
            balance=balance,
            kind=kind,
            delta_available=0,
            delta_held=-amount,
            idempotency_key=task_settle_key(task.pk),
            task=task,
        )


def ledger_capture(*, task: Task, charge: int | None = None) -> LedgerEntry | None:
    """Charge a succeeded task its held price, or ``charge`` when that is less (the platform
    fee of a task its organization's own upstream account ran, held at the normal price): the
    capture then takes ``charge`` and a release entry (``task:<id>:rest``) gives the rest of
    the hold back, in the same transaction.

    Returns the settle entry, which is the earlier one (possibly a release) if the task was
    settled already, or None when the task holds nothing.
    """
    if charge is not None:
        charge = _tokens(charge, what="A capture")
        if charge < 0:
            raise ValidationFailed("A capture cannot be negative.")
    return _settle(task=task, kind=EntryKind.CAPTURE, charge=charge)


def ledger_release(*, task: Task) -> LedgerEntry | None:
    """Give a failed or cancelled task's hold back. Same return contract as ``ledger_capture``."""
    return _settle(task=task, kind=EntryKind.RELEASE)
