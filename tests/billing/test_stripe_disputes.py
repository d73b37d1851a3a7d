"""Stripe disputes (chargebacks): ``charge.dispute.*`` on ``POST /billing/stripe/webhook``.

A dispute's withdrawn funds take the tokens they bought back the way a refund does, its
reinstated funds give back what the withdrawal took (never more), once per dispute, whatever
order Stripe delivers the events in; with the purchase's refunds, never more than was bought.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.test import Client

from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_adjust, ledger_capture, ledger_hold
from apps.billing.models import (
    Balance,
    CheckoutKind,
    CheckoutSession,
    EntryKind,
    LedgerEntry,
    StripeDispute,
    StripeEvent,
    TokenPackage,
)
from apps.tasks.models import Task
from apps.tasks.services.cancel import task_cancel
from tests.factories import OrganizationFactory, UserFactory

from .helpers import new_task, run_all, snapshot
from .stripe_fakes import WEBHOOK_SECRET, charge, checkout_session, dispute, event, sign

pytestmark = pytest.mark.django_db

URL = "/billing/stripe/webhook"
WITHDRAWN = "charge.dispute.funds_withdrawn"
REINSTATED = "charge.dispute.funds_reinstated"
TOKENS = 350_000  # the package: 350,000 tokens for 1000 fen


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def open_session(organization, owner):
    package = TokenPackage.objects.create(name="Starter", tokens=TOKENS, price_amount=1000)
    return CheckoutSession.objects.create(
        session_id="cs_test_a",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        package=package,
        tokens=TOKENS,
        amount=1000,
        currency="cny",
        created_by=owner,
    )


def deliver(client, payload: bytes, signature: str | None = None):
    headers = {"HTTP_STRIPE_SIGNATURE": sign(payload) if signature is None else signature}
    return client.post(URL, data=payload, content_type="application/json", **headers)


def ok(client, payload: bytes) -> None:
    response = deliver(client, payload)
    assert response.status_code == 200, response.content


def credit(client, organization) -> None:
    ok(
        client,
        event(
            "checkout.session.completed",
            checkout_session("cs_test_a", organization_id=organization.pk),
        ),
    )
    assert snapshot(organization) == (TOKENS, 0, 1)


def dispute_event(
    event_type: str,
    *,
    amount: int = 1000,
    status: str = "needs_response",
    withdrawn: int | None = None,
    reinstated: int | None = None,
    payment_intent: str | None = "pi_test_1",
    event_id: str | None = None,
    created: int | None = None,
    **extra,
) -> bytes:
    return event(
        event_type,
        dispute(
            "dp_1",
            charge="ch_1",
            payment_intent=payment_intent,
            amount=amount,
            status=status,
            withdrawn=withdrawn,
            reinstated=reinstated,
            **extra,
        ),
        event_id=event_id,
        created=created,
    )


def withdrawn(amount: int = 1000, **kwargs) -> bytes:
    return dispute_event(WITHDRAWN, amount=amount, withdrawn=amount, **kwargs)


def reinstated(amount: int = 1000, *, back: int | None = None, **kwargs) -> bytes:
    kwargs.setdefault("status", "won")
    return dispute_event(
        REINSTATED,
        amount=amount,
        withdrawn=kwargs.pop("withdrawn", amount),
        reinstated=amount if back is None else back,
        **kwargs,
    )


def dispute_entries(organization) -> list[tuple[int, str]]:
    return list(
        LedgerEntry.objects.filter(organization=organization, kind=EntryKind.DISPUTE)
        .order_by("id")
        .values_list("delta_available", "idempotency_key")
    )


# --- withdrawn / reinstated ---------------------------------------------------------------------


def test_withdrawn_funds_take_the_purchased_tokens_back(client, organization, open_session):
    credit(client, organization)
    ok(client, withdrawn())

    entry = LedgerEntry.objects.get(kind=EntryKind.DISPUTE)
    assert (entry.delta_available, entry.idempotency_key, entry.stripe_object_id) == (
        -TOKENS,
        "stripe:dispute:dp_1:withdrawn",
        "dp_1",
    )
    assert entry.reason == (
        "Stripe dispute dp_1 on charge ch_1: 1000 of 1000 CNY (minor units) withdrawn, "
        "350000 tokens to take back"
    )
    assert snapshot(organization) == (0, 0, 2)
    open_session.refresh_from_db()
    assert (open_session.tokens_disputed, open_session.tokens_refunded) == (TOKENS, 0)
    record = StripeDispute.objects.get()
    assert (record.checkout_session, record.charge_id, record.status, record.tokens_withdrawn) == (
        open_session,
        "ch_1",
        "needs_response",
        TOKENS,
    )
    assert StripeEvent.objects.get(type=WITHDRAWN).error == ""
    assert ledger_audit().ok


def test_a_dispute_of_part_of_the_charge_takes_back_its_share(client, organization, open_session):
    credit(client, organization)
    ok(client, withdrawn(400))
    assert dispute_entries(organization) == [(-140_000, "stripe:dispute:dp_1:withdrawn")]
    assert snapshot(organization) == (210_000, 0, 2)
    assert ledger_audit().ok


def test_reinstated_funds_give_back_what_the_withdrawal_took(client, organization, open_session):
    credit(client, organization)
    ok(client, withdrawn())
    assert snapshot(organization) == (0, 0, 2)

    ok(client, reinstated())
    assert dispute_entries(organization) == [
        (-TOKENS, "stripe:dispute:dp_1:withdrawn"),
        (TOKENS, "stripe:dispute:dp_1:reinstated"),
    ]
    assert snapshot(organization) == (TOKENS, 0, 3)
    open_session.refresh_from_db()
    assert open_session.tokens_disputed == 0
    record = StripeDispute.objects.get()
    assert (record.status, record.tokens_withdrawn, record.tokens_reinstated) == (
        "won",
        TOKENS,
        TOKENS,
    )
    assert ledger_audit().ok


def test_a_reinstatement_never_gives_back_tokens_the_withdrawal_could_not_take(
    client, organization, open_session
):
    """300,000 of the tokens were spent before the dispute: the withdrawal takes the 50,000
    left, and the reinstatement gives back those 50,000, not the 350,000 it owed."""
    credit(client, organization)
    ledger_adjust(
        organization=organization,
        amount=-300_000,
        reason="spent",
        operator=None,
        idempotency_key="s",
    )
    ok(client, withdrawn())
    ok(client, reinstated())
    deltas = [delta for delta, _key in dispute_entries(organization)]
    assert deltas == [-50_000, 50_000]
    reinstatement = LedgerEntry.objects.filter(kind=EntryKind.DISPUTE).latest("id")
    assert reinstatement.reason.endswith(
        "(300000 of 350000 tokens were never taken back by the withdrawal and are not given back)"
    )
    assert snapshot(organization) == (50_000, 0, 4)
    assert ledger_audit().ok


def test_a_partial_reinstatement_gives_back_its_share(client, organization, open_session):
    """Stripe reinstated 40% of the withdrawn funds (its balance transactions are in the
    account's settlement currency, not the charge's: only their ratio counts)."""
    credit(client, organization)
    ok(client, dispute_event(WITHDRAWN, withdrawn=140, settlement_currency="usd"))
    ok(client, reinstated(withdrawn=140, back=56, status="lost", settlement_currency="usd"))
    assert [delta for delta, _key in dispute_entries(organization)] == [-TOKENS, 140_000]
    assert snapshot(organization) == (140_000, 0, 3)
    open_session.refresh_from_db()
    assert open_session.tokens_disputed == 210_000
    assert ledger_audit().ok


def test_redelivered_dispute_events_move_tokens_once(client, organization, open_session):
    credit(client, organization)
    first = withdrawn(event_id="evt_w")
    ok(client, first)
    ok(client, first)  # the same event again: a duplicate
    ok(client, withdrawn())  # the same withdrawal under another event id
    assert snapshot(organization) == (0, 0, 2)

    back = reinstated(event_id="evt_r")
    for payload in (back, back, reinstated(), withdrawn()):
        ok(client, payload)
    assert snapshot(organization) == (TOKENS, 0, 3)
    assert StripeEvent.objects.filter(type=WITHDRAWN).count() == 3
    assert (
        StripeEvent.objects.filter(
            error="The funds of dispute dp_1 are accounted for already."
        ).count()
        == 3
    )
    assert ledger_audit().ok


@pytest.mark.parametrize(
    ("back", "kept"), [(1000, 0), (400, 210_000)], ids=["reinstated-in-full", "in-part"]
)
def test_a_reinstatement_delivered_before_its_withdrawal(
    client, organization, open_session, back, kept
):
    """Stripe does not order deliveries: the reinstatement (whose dispute lists both balance
    transactions) comes first. The two are applied as one movement of the difference, and the
    late withdrawal takes nothing more."""
    credit(client, organization)
    ok(client, reinstated(back=back))
    ok(client, withdrawn())
    assert snapshot(organization)[:2] == (TOKENS - kept, 0)
    assert sum(delta for delta, _key in dispute_entries(organization)) == -kept
    record = StripeDispute.objects.get()
    assert record.withdrawn_at is not None and record.reinstated_at is not None
    assert record.tokens_owed == kept
    assert ledger_audit().ok


@pytest.mark.parametrize("back", [1000, 400], ids=["reinstated-in-full", "in-part"])
def test_either_order_ends_the_same(client, organization, other_organization, back):
    results = []
    for org, session_id, order in (
        (organization, "cs_in_order", "in-order"),
        (other_organization, "cs_reversed", "reversed"),
    ):
        CheckoutSession.objects.create(
            session_id=session_id,
            organization=org,
            kind=CheckoutKind.TOPUP,
            tokens=TOKENS,
            amount=1000,
            currency="cny",
        )
        pi = f"pi_{order}"
        ok(
            client,
            event(
                "checkout.session.completed",
                checkout_session(session_id, organization_id=org.pk, payment_intent=pi),
            ),
        )
        payloads = [
            event(
                WITHDRAWN,
                dispute(
                    f"dp_{order}", charge="ch_x", payment_intent=pi, amount=1000, withdrawn=1000
                ),
            ),
            event(
                REINSTATED,
                dispute(
                    f"dp_{order}",
                    charge="ch_x",
                    payment_intent=pi,
                    amount=1000,
                    status="won",
                    withdrawn=1000,
                    reinstated=back,
                ),
            ),
        ]
        if order == "reversed":
            payloads.reverse()
        for payload in payloads:
            ok(client, payload)
        record = StripeDispute.objects.get(dispute_id=f"dp_{order}")
        assert record.withdrawn_at is not None and record.reinstated_at is not None
        results.append((Balance.objects.get(organization=org).available, record.tokens_owed))
    kept = TOKENS - TOKENS * back // 1000
    assert results[0] == results[1] == (TOKENS - kept, kept)
    assert ledger_audit().ok


def test_a_dispute_delivered_before_its_payment_is_applied_when_credited(
    client, organization, open_session
):
    ok(client, dispute_event("charge.dispute.created", withdrawn=1000))
    ok(client, withdrawn())
    assert snapshot(organization) == (0, 0, 0)  # nothing credited yet, nothing to take back
    assert StripeDispute.objects.count() == 0
    assert StripeEvent.objects.get(type=WITHDRAWN).error == (
        "Dispute dp_1 of charge ch_1 paid for no top-up credited here."
    )

    ok(
        client,
        event(
            "checkout.session.completed",
            checkout_session("cs_test_a", organization_id=organization.pk),
        ),
    )
    assert snapshot(organization) == (0, 0, 2)
    assert dispute_entries(organization) == [(-TOKENS, "stripe:dispute:dp_1:withdrawn")]
    assert set(
        StripeEvent.objects.filter(type__startswith="charge.dispute.").values_list(
            "error", flat=True
        )
    ) == {"Applied when Checkout Session cs_test_a was credited."}
    assert StripeDispute.objects.get().checkout_session == open_session

    # Redelivered afterwards it takes nothing more; the reinstatement still gives it back.
    ok(client, withdrawn())
    ok(client, reinstated())
    assert snapshot(organization) == (TOKENS, 0, 3)
    assert ledger_audit().ok


# --- disputes and refunds of one purchase -------------------------------------------------------


def full_refund() -> bytes:
    return event(
        "charge.refunded",
        charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=1000),
    )


@pytest.mark.parametrize("first", ["dispute", "refund"])
def test_a_dispute_and_a_full_refund_never_take_more_than_was_bought(
    client, organization, open_session, fund, first
):
    credit(client, organization)
    fund(organization, 1_000_000)  # other tokens, which neither may take
    payloads = [withdrawn(), full_refund()]
    if first == "refund":
        payloads.reverse()
    for payload in payloads:
        ok(client, payload)

    assert Balance.objects.get(organization=organization).available == 1_000_000
    taken = LedgerEntry.objects.filter(
        organization=organization, kind__in=(EntryKind.REFUND, EntryKind.DISPUTE)
    ).values_list("delta_available", flat=True)
    assert sum(taken) == -TOKENS
    open_session.refresh_from_db()
    assert (open_session.tokens_refunded, open_session.tokens_disputed) == (TOKENS, TOKENS)
    assert ledger_audit().ok


def test_a_won_dispute_of_a_purchase_refunded_since_gives_nothing_back(
    client, organization, open_session, fund
):
    """The dispute took the tokens back, then the payment was refunded in full, then the
    dispute was won: the customer has the refund, so the tokens stay taken."""
    credit(client, organization)
    fund(organization, 1_000_000)
    for payload in (withdrawn(), full_refund(), reinstated()):
        ok(client, payload)
    assert Balance.objects.get(organization=organization).available == 1_000_000
    assert dispute_entries(organization) == [(-TOKENS, "stripe:dispute:dp_1:withdrawn")]
    assert ledger_audit().ok


def test_a_partial_refund_then_a_dispute_takes_the_rest_and_its_loss_keeps_it(
    client, organization, open_session
):
    """A quarter refunded, then the whole charge disputed: the dispute takes back the other
    three quarters; Stripe reinstates the refunded quarter (its balance transactions), which
    the refund already took, so nothing is given back."""
    credit(client, organization)
    ok(
        client,
        event(
            "charge.refunded",
            charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=250),
        ),
    )
    ok(client, withdrawn())
    assert snapshot(organization)[:2] == (0, 0)
    ok(client, reinstated(back=250, status="lost"))
    assert snapshot(organization)[:2] == (0, 0)
    assert ledger_audit().ok


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_disputes_and_refunds_racing_their_own_payments_are_never_lost_nor_doubled():
    """Each payment's completion, its dispute's withdrawn funds and its full refund arrive at
    the same moment: whichever is processed first, the purchase's tokens are taken back exactly
    once (never skipped for good, never twice)."""
    purchases = []
    for n in range(16):
        organization = OrganizationFactory()
        CheckoutSession.objects.create(
            session_id=f"cs_race_{n}",
            organization=organization,
            kind=CheckoutKind.TOPUP,
            tokens=700_000,
            amount=2000,
            currency="cny",
        )
        purchases.append((organization, n))
    payloads = []
    for organization, n in purchases:
        pi = f"pi_race_{n}"
        payloads += [
            event(
                "checkout.session.completed",
                checkout_session(
                    f"cs_race_{n}", organization_id=organization.pk, payment_intent=pi
                ),
            ),
            event(
                WITHDRAWN,
                dispute(
                    f"dp_race_{n}",
                    charge=f"ch_race_{n}",
                    payment_intent=pi,
                    amount=2000,
                    withdrawn=2000,
                ),
            ),
            event(
                "charge.refunded",
                charge(f"ch_race_{n}", payment_intent=pi, amount=2000, amount_refunded=2000),
            ),
        ]

    def post(payload: bytes) -> int:
        return (
            Client()
            .post(
                URL,
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=sign(payload),
            )
            .status_code
        )

    assert Counter(run_all(post, payloads)) == {200: 48}
    for organization, _n in purchases:
        assert Balance.objects.get(organization=organization).available == 0
        taken = LedgerEntry.objects.filter(
            organization=organization, kind__in=(EntryKind.REFUND, EntryKind.DISPUTE)
        ).values_list("delta_available", flat=True)
        assert sum(taken) == -700_000
    assert set(CheckoutSession.objects.values_list("tokens_refunded", "tokens_disputed")) == {
        (700_000, 700_000)
    }
    assert ledger_audit().ok


# --- tokens held by queued tasks ----------------------------------------------------------------


def test_a_withdrawal_while_the_tokens_are_held_takes_them_back_when_released(
    client, organization, open_session
):
    credit(client, organization)
    task = new_task(organization)
    ledger_hold(task=task, amount=TOKENS)
    ok(client, withdrawn())

    entry = LedgerEntry.objects.get(kind=EntryKind.DISPUTE)
    assert entry.delta_available == 0
    assert entry.reason.endswith(
        "(350000 of 350000 tokens are held by unfinished tasks and are taken back as their "
        "holds are released)"
    )
    assert Balance.objects.get(organization=organization).clawback_pending == TOKENS

    task_cancel(organization=organization, task_id=task.pk)
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held, balance.clawback_pending) == (0, 0, 0)
    assert ledger_audit().ok


@pytest.mark.parametrize(
    ("fate", "given_back"),
    [("still-queued", TOKENS), ("cancelled", TOKENS), ("succeeded", 0)],
)
def test_a_reinstatement_gives_back_what_the_held_tokens_paid(
    client, organization, open_session, fate, given_back
):
    """The withdrawal earmarked the tokens a queued task held. Reinstated while the task is
    still queued, the earmark is dropped; after the task was cancelled (its hold paid the
    withdrawal), that is given back; after it succeeded (spent, never taken), nothing is."""
    credit(client, organization)
    task = new_task(organization)
    ledger_hold(task=task, amount=TOKENS)
    ok(client, withdrawn())
    assert Balance.objects.get(organization=organization).clawback_pending == TOKENS
    if fate == "cancelled":
        task_cancel(organization=organization, task_id=task.pk)
    elif fate == "succeeded":
        Task.objects.filter(pk=task.pk).update(status="SUCCESS")
        ledger_capture(task=task)
    ok(client, reinstated())
    if fate == "still-queued":
        assert Balance.objects.get(organization=organization).clawback_pending == 0
        task_cancel(organization=organization, task_id=task.pk)

    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held, balance.clawback_pending) == (given_back, 0, 0)
    assert ledger_audit().ok


# --- created / closed: recorded for the operator ------------------------------------------------


@pytest.fixture
def superuser_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_created_and_closed_are_recorded_and_move_nothing(
    client, organization, open_session, superuser_client
):
    credit(client, organization)
    now = int(time.time())
    ok(client, dispute_event("charge.dispute.created", withdrawn=1000, created=now))
    record = StripeDispute.objects.get()
    assert (record.dispute_id, record.status, record.reason, record.amount, record.currency) == (
        "dp_1",
        "needs_response",
        "fraudulent",
        1000,
        "cny",
    )
    assert (record.checkout_session, record.payment_intent_id, record.charge_id) == (
        open_session,
        "pi_test_1",
        "ch_1",
    )
    ok(client, dispute_event("charge.dispute.closed", status="lost", created=now + 10))
    # An older update delivered late does not reopen it.
    ok(client, dispute_event("charge.dispute.updated", status="under_review", created=now + 5))
    record.refresh_from_db()
    assert record.status == "lost"
    assert snapshot(organization) == (TOKENS, 0, 1)
    assert set(
        StripeEvent.objects.filter(type__startswith="charge.dispute.").values_list(
            "error", flat=True
        )
    ) == {""}

    page = superuser_client.get("/admin/billing/stripedispute/")
    assert page.status_code == 200
    assert "dp_1" in page.content.decode() and "lost" in page.content.decode()
    assert superuser_client.get("/admin/billing/stripedispute/add/").status_code == 403


# --- bad payloads -------------------------------------------------------------------------------


def _obj(**changes):
    obj = dispute("dp_1", charge="ch_1", payment_intent="pi_test_1", amount=1000, withdrawn=1000)
    for key, value in changes.items():
        if value is None:
            obj.pop(key)
        else:
            obj[key] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        (_obj(object="charge"), f"The {WITHDRAWN} event carries no dispute."),
        (_obj(id=None), f"The {WITHDRAWN} event carries no dispute."),
        (_obj(amount=None), "Dispute dp_1 reports no disputed amount."),
        (_obj(amount=-5), "Dispute dp_1 reports no disputed amount."),
        (_obj(amount="1000"), "Dispute dp_1 reports no disputed amount."),
        (_obj(amount=True), "Dispute dp_1 reports no disputed amount."),
        (
            _obj(payment_intent="pi_unknown"),
            "Dispute dp_1 of charge ch_1 paid for no top-up credited here.",
        ),
        (
            _obj(payment_intent=None),
            "Dispute dp_1 of charge ch_1 paid for no top-up credited here.",
        ),
    ],
    ids=[
        "not-a-dispute",
        "no-id",
        "no-amount",
        "negative-amount",
        "string-amount",
        "boolean-amount",
        "unknown-payment",
        "no-payment-intent",
    ],
)
def test_a_bad_or_unknown_dispute_changes_nothing(client, organization, open_session, obj, error):
    credit(client, organization)
    response = deliver(client, event(WITHDRAWN, obj))
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    stored = StripeEvent.objects.get(type=WITHDRAWN)
    assert stored.processed_at is not None
    assert stored.error == error
    assert StripeDispute.objects.count() == 0
    assert snapshot(organization) == (TOKENS, 0, 1)
    open_session.refresh_from_db()
    assert open_session.tokens_disputed == 0


def test_a_dispute_event_with_a_bad_signature_answers_400_and_the_signed_one_counts(
    client, organization, open_session
):
    credit(client, organization)
    payload = withdrawn()
    response = deliver(client, payload, sign(payload, secret="whsec_not_ours"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.filter(type=WITHDRAWN).exists()
    assert snapshot(organization) == (TOKENS, 0, 1)
    # Stripe's own delivery of the same event, signed, is the one that takes the tokens back.
    ok(client, payload)
    assert snapshot(organization) == (0, 0, 2)


# --- ledger_check -------------------------------------------------------------------------------


def _append(organization, *, key: str, delta: int) -> None:
    """A dispute entry written around the ledger, with a consistent chain and balance: only
    the dispute check can object to it."""
    balance = Balance.objects.get(organization=organization)
    LedgerEntry.objects.create(
        organization=organization,
        kind=EntryKind.DISPUTE,
        delta_available=delta,
        delta_held=0,
        available_after=balance.available + delta,
        held_after=balance.held,
        idempotency_key=key,
        stripe_object_id="dp_x",
    )
    Balance.objects.filter(organization=organization).update(available=balance.available + delta)


def dispute_drifts() -> list[str]:
    report = ledger_audit()
    return [drift.message for drift in report.drifts if drift.check in ("dispute", "entry")]


def test_ledger_check_reports_a_reinstatement_without_a_withdrawal(
    client, organization, open_session
):
    credit(client, organization)
    _append(organization, key="stripe:dispute:dp_x:reinstated", delta=1000)
    assert dispute_drifts() == ["dispute dp_x was reinstated without a withdrawal before it"]


def test_ledger_check_reports_a_reinstatement_larger_than_the_withdrawal(
    client, organization, open_session
):
    credit(client, organization)
    _append(organization, key="stripe:dispute:dp_x:withdrawn", delta=-100_000)
    _append(organization, key="stripe:dispute:dp_x:reinstated", delta=100_001)
    assert dispute_drifts() == [
        "dispute dp_x's reinstatement gives back more than its withdrawal took"
    ]


@pytest.mark.parametrize(
    ("key", "delta", "problem"),
    [
        ("stripe:dispute:dp_x:withdrawn", 10, "a dispute's withdrawal must not add tokens"),
        ("something-else", -10, "a dispute entry must be a dispute's withdrawal or reinstatement"),
    ],
    ids=["withdrawal-adds", "not-a-dispute-key"],
)
def test_ledger_check_knows_the_shape_of_dispute_entries(
    client, organization, open_session, key, delta, problem
):
    credit(client, organization)
    _append(organization, key=key, delta=delta)
    assert dispute_drifts() == [problem]
