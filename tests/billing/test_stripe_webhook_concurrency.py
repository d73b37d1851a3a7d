"""Stripe delivering the same event many times at once, on real PostgreSQL with real threads."""

from __future__ import annotations

from collections import Counter

import pytest
from django.test import Client

from apps.billing.audit import ledger_audit
from apps.billing.models import CheckoutKind, CheckoutSession, CheckoutStatus, StripeEvent
from tests.factories import OrganizationFactory

from .helpers import run_all, snapshot
from .stripe_fakes import WEBHOOK_SECRET, checkout_session, event, sign

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

URL = "/billing/stripe/webhook"


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


def open_session(organization):
    return CheckoutSession.objects.create(
        session_id="cs_race",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        tokens=700_000,
        amount=2000,
        currency="cny",
    )


def post(payload: bytes) -> int:
    response = Client().post(
        URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload)
    )
    return response.status_code


def test_one_event_delivered_100_times_concurrently_credits_once():
    organization = OrganizationFactory()
    open_session(organization)
    payload = event(
        "checkout.session.completed",
        checkout_session("cs_race", organization_id=organization.pk),
        event_id="evt_race",
    )

    statuses = Counter(run_all(post, [payload] * 100))

    assert statuses == {200: 100}
    assert snapshot(organization) == (700_000, 0, 1)
    assert StripeEvent.objects.filter(event_id="evt_race").count() == 1
    assert CheckoutSession.objects.get().status == CheckoutStatus.CREDITED
    assert ledger_audit().ok


def test_completed_and_async_succeeded_racing_credit_once():
    organization = OrganizationFactory()
    open_session(organization)
    session = checkout_session("cs_race", organization_id=organization.pk)
    payloads = []
    for n in range(40):
        # Distinct event ids, as Stripe's two event types would have, each also redelivered.
        kind = "checkout.session.completed" if n % 2 else "checkout.session.async_payment_succeeded"
        payloads.extend([event(kind, session, event_id=f"evt_{n}")] * 2)

    statuses = Counter(run_all(post, payloads))

    assert statuses == {200: 80}
    assert snapshot(organization) == (700_000, 0, 1)
    assert StripeEvent.objects.count() == 40
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_refunds_racing_their_own_payments_are_never_lost():
    """Each payment's completion and its full refund arrive at the same moment: whichever is
    processed first, the refund is clawed back exactly once (never skipped for good)."""
    from .stripe_fakes import charge

    sessions = []
    for n in range(24):
        organization = OrganizationFactory()
        CheckoutSession.objects.create(
            session_id=f"cs_race_{n}",
            organization=organization,
            kind=CheckoutKind.TOPUP,
            tokens=700_000,
            amount=2000,
            currency="cny",
        )
        sessions.append((organization, n))
    payloads = []
    for organization, n in sessions:
        payloads.append(
            event(
                "checkout.session.completed",
                checkout_session(
                    f"cs_race_{n}", organization_id=organization.pk, payment_intent=f"pi_race_{n}"
                ),
            )
        )
        payloads.append(
            event(
                "charge.refunded",
                charge(
                    f"ch_race_{n}",
                    payment_intent=f"pi_race_{n}",
                    amount=2000,
                    amount_refunded=2000,
                ),
            )
        )

    statuses = Counter(run_all(post, payloads))

    assert statuses == {200: 48}
    for organization, _n in sessions:
        assert snapshot(organization) == (0, 0, 2)  # the top-up and its clawback
    assert set(CheckoutSession.objects.values_list("tokens_refunded", flat=True)) == {700_000}
    assert ledger_audit().ok


def test_a_skipped_refund_keeps_its_payment_locked_until_it_is_recorded(monkeypatch):
    """The race above, made to happen every time: a refund delivered before its payment is
    skipped (nothing credited yet to claw back) and, before its delivery is recorded and
    committed, the payment's credit comes in. The credit must wait for that commit and then
    apply the refund; before the fix the payment's lock went with the skipped step's savepoint,
    the credit ran in between and never saw the refund (the customer kept tokens and money)."""
    import threading
    import time

    from django.db import connection

    from .stripe_fakes import charge

    organization = OrganizationFactory()
    open_session(organization)
    paid = event(
        "checkout.session.completed",
        checkout_session("cs_race", organization_id=organization.pk, payment_intent="pi_held"),
    )
    refunded = event(
        "charge.refunded",
        charge("ch_held", payment_intent="pi_held", amount=2000, amount_refunded=2000),
    )
    recorded, release = threading.Event(), threading.Event()
    save = StripeEvent.save

    def save_then_wait(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if threading.current_thread().name == "refund":
            recorded.set()  # skipped and marked processed; not committed yet
            release.wait(30)

    monkeypatch.setattr(StripeEvent, "save", save_then_wait)
    statuses: dict[str, int] = {}

    def deliver(name: str, payload: bytes) -> threading.Thread:
        def run() -> None:
            try:
                statuses[name] = post(payload)
            finally:
                connection.close()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    refund = deliver("refund", refunded)
    assert recorded.wait(30)
    payment = deliver("payment", paid)
    # The payment either finishes (it did not wait: the bug) or waits for the refund's lock.
    deadline = time.monotonic() + 30
    while payment.is_alive() and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if cursor.fetchone()[0]:
                break
        time.sleep(0.01)
    waited = payment.is_alive()
    release.set()
    refund.join(30)
    payment.join(30)

    assert statuses == {"refund": 200, "payment": 200}
    assert waited, "the payment's credit ran while the skipped refund was still uncommitted"
    assert snapshot(organization) == (0, 0, 2)  # the top-up and its clawback
    assert CheckoutSession.objects.get().tokens_refunded == 700_000
    assert ledger_audit().ok
