"""``POST /billing/stripe/webhook``: verified, stored once, credited once, in any order."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from apps.accounts.models import MembershipTier
from apps.billing import stripe_service
from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_hold
from apps.billing.models import (
    Balance,
    CheckoutKind,
    CheckoutSession,
    CheckoutStatus,
    EntryKind,
    LedgerEntry,
    StripeEvent,
    TokenPackage,
)
from apps.billing.stripe_service import checkout_key
from apps.tasks.services.cancel import task_cancel
from tests.factories import OrganizationFactory

from .helpers import new_task, snapshot
from .stripe_fakes import WEBHOOK_SECRET, charge, checkout_session, event, sign, subscription

pytestmark = pytest.mark.django_db

URL = "/billing/stripe/webhook"


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


@pytest.fixture
def client():
    # The real CSRF middleware runs: the endpoint must be exempt, not accidentally tested around.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def package(db):
    return TokenPackage.objects.create(name="Starter", tokens=350_000, price_amount=1000)


@pytest.fixture
def open_session(organization, package, owner):
    return CheckoutSession.objects.create(
        session_id="cs_test_a",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        package=package,
        tokens=350_000,
        amount=1000,
        currency="cny",
        created_by=owner,
    )


@pytest.fixture
def vip(db):
    tier = MembershipTier.objects.get(code="VIP")
    tier.stripe_price_id = "price_vip"
    tier.save()
    return tier


def deliver(client, payload: bytes, signature: str | None = None):
    headers = {"HTTP_STRIPE_SIGNATURE": sign(payload) if signature is None else signature}
    return client.post(URL, data=payload, content_type="application/json", **headers)


def completed(organization, *, payment_status="paid", **kwargs):
    return event(
        "checkout.session.completed",
        checkout_session(
            "cs_test_a", organization_id=organization.pk, payment_status=payment_status
        ),
        **kwargs,
    )


def async_succeeded(organization, **kwargs):
    return event(
        "checkout.session.async_payment_succeeded",
        checkout_session("cs_test_a", organization_id=organization.pk),
        **kwargs,
    )


# --- top-ups ------------------------------------------------------------------------------------


def test_completed_paid_session_credits_the_package_once(client, organization, open_session):
    payload = completed(organization, event_id="evt_1")
    response = deliver(client, payload)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}

    entry = LedgerEntry.objects.get(organization=organization)
    assert (entry.kind, entry.amount, entry.idempotency_key, entry.stripe_object_id) == (
        EntryKind.TOPUP,
        350_000,
        checkout_key("cs_test_a"),
        "cs_test_a",
    )
    assert entry.reason == "Stripe Checkout: Starter"
    assert snapshot(organization) == (350_000, 0, 1)
    open_session.refresh_from_db()
    assert (open_session.status, open_session.credited_entry, open_session.payment_intent_id) == (
        CheckoutStatus.CREDITED,
        entry,
        "pi_test_1",
    )
    stored = StripeEvent.objects.get()
    assert (stored.event_id, stored.type, stored.error) == (
        "evt_1",
        "checkout.session.completed",
        "",
    )
    assert stored.processed_at is not None
    assert stored.payload["data"]["object"]["id"] == "cs_test_a"
    organization.refresh_from_db()
    assert organization.stripe_customer_id == "cus_test_1"


def test_a_replayed_event_answers_200_and_does_nothing(client, organization, open_session):
    payload = completed(organization, event_id="evt_1")
    deliver(client, payload)
    processed_at = StripeEvent.objects.get().processed_at
    for _ in range(3):
        response = deliver(client, payload)
        assert response.status_code == 200
        assert response.json() == {"received": True, "duplicate": True}
    assert snapshot(organization) == (350_000, 0, 1)
    assert StripeEvent.objects.get().processed_at == processed_at


@pytest.mark.parametrize("order", ["completed_first", "async_first"])
def test_completed_and_async_succeeded_in_either_order_credit_once(
    client, organization, open_session, order
):
    events = [completed(organization), async_succeeded(organization)]
    if order == "async_first":
        events.reverse()
    for payload in events:
        assert deliver(client, payload).status_code == 200
    assert snapshot(organization) == (350_000, 0, 1)
    assert StripeEvent.objects.count() == 2
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.CREDITED


@pytest.mark.parametrize("order", ["completed_first", "async_first"])
def test_an_unpaid_completion_waits_for_the_async_payment(
    client, organization, open_session, order
):
    unpaid = completed(organization, payment_status="unpaid")
    paid = async_succeeded(organization)
    if order == "completed_first":
        deliver(client, unpaid)
        assert snapshot(organization) == (0, 0, 0)
        open_session.refresh_from_db()
        assert open_session.status == CheckoutStatus.AWAITING_PAYMENT
        assert StripeEvent.objects.get().error.startswith("Not paid yet (unpaid)")
        deliver(client, paid)
    else:
        deliver(client, paid)
        deliver(client, unpaid)
    assert snapshot(organization) == (350_000, 0, 1)
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.CREDITED


def test_the_tokens_shown_at_checkout_are_credited_even_if_the_package_changed(
    client, organization, open_session, package
):
    package.tokens = 1
    package.save()
    deliver(client, completed(organization))
    assert snapshot(organization) == (350_000, 0, 1)


def test_a_session_we_never_recorded_is_rebuilt_from_its_metadata(client, organization, package):
    payload = event(
        "checkout.session.completed",
        checkout_session(
            "cs_test_lost", organization_id=organization.pk, package_id=package.pk, tokens=70_000
        ),
    )
    assert deliver(client, payload).status_code == 200
    record = CheckoutSession.objects.get(session_id="cs_test_lost")
    assert (record.organization, record.package, record.tokens, record.status) == (
        organization,
        package,
        70_000,
        CheckoutStatus.CREDITED,
    )
    assert snapshot(organization) == (70_000, 0, 1)


def test_a_session_naming_no_organization_is_recorded_and_skipped(client, organization):
    payload = event("checkout.session.completed", checkout_session("cs_x", organization_id=999_999))
    assert deliver(client, payload).status_code == 200
    stored = StripeEvent.objects.get()
    assert stored.processed_at is not None
    assert stored.error == "Checkout Session cs_x names no organization of ours."
    assert LedgerEntry.objects.count() == 0
    assert CheckoutSession.objects.count() == 0


def test_unhandled_event_types_are_stored_and_acknowledged(client):
    payload = event("invoice.paid", {"id": "in_1", "object": "invoice"})
    assert deliver(client, payload).status_code == 200
    stored = StripeEvent.objects.get()
    assert stored.error == "Event type invoice.paid is not handled."
    assert stored.processed_at is not None
    assert LedgerEntry.objects.count() == 0


def test_a_failed_async_payment_is_marked_and_credits_nothing(client, organization, open_session):
    deliver(client, completed(organization, payment_status="unpaid"))
    payload = event(
        "checkout.session.async_payment_failed",
        checkout_session("cs_test_a", organization_id=organization.pk, payment_status="unpaid"),
    )
    assert deliver(client, payload).status_code == 200
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.PAYMENT_FAILED
    assert snapshot(organization) == (0, 0, 0)


def test_an_expired_session_is_marked_and_credits_nothing(client, organization, open_session):
    payload = event(
        "checkout.session.expired",
        checkout_session("cs_test_a", organization_id=organization.pk, payment_status="unpaid"),
    )
    assert deliver(client, payload).status_code == 200
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.EXPIRED
    assert snapshot(organization) == (0, 0, 0)


def test_a_processing_failure_answers_500_and_the_retry_credits(
    client, organization, open_session, monkeypatch
):
    real_topup = stripe_service.ledger_topup
    calls = {"n": 0}

    def flaky_topup(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real_topup(**kwargs)

    monkeypatch.setattr(stripe_service, "ledger_topup", flaky_topup)
    payload = completed(organization, event_id="evt_retry")

    first = deliver(client, payload)
    assert first.status_code == 500
    stored = StripeEvent.objects.get()
    assert (stored.processed_at, stored.error) == (None, "RuntimeError: database hiccup")
    assert snapshot(organization) == (0, 0, 0)
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.OPEN

    second = deliver(client, payload)
    assert second.status_code == 200
    assert second.json() == {"received": True, "duplicate": False}
    stored.refresh_from_db()
    assert stored.processed_at is not None and stored.error == ""
    assert snapshot(organization) == (350_000, 0, 1)


# --- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "garbage",
        "t=1,v1=0000",
        sign(b"another payload"),
        sign(b"", secret="whsec_wrong"),
        "wrong-secret",
        "too-old",
    ],
    # The signed cases embed the collection time: ids must not, or xdist workers collect
    # different tests and the run aborts.
    ids=[
        "empty",
        "garbage",
        "no-match",
        "other-payload",
        "wrong-secret-empty-payload",
        "wrong-secret",
        "too-old",
    ],
)
def test_a_bad_signature_answers_400_and_credits_nothing(
    client, organization, open_session, signature
):
    payload = completed(organization)
    if signature == "wrong-secret":
        signature = sign(payload, secret="whsec_not_ours")
    elif signature == "too-old":
        signature = sign(payload, timestamp=int(time.time()) - 3600)
    response = client.post(
        URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert StripeEvent.objects.count() == 0
    assert snapshot(organization) == (0, 0, 0)
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.OPEN


def test_a_missing_signature_header_answers_400(client, organization, open_session):
    response = client.post(URL, data=completed(organization), content_type="application/json")
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0
    assert snapshot(organization) == (0, 0, 0)


def test_without_a_webhook_secret_nothing_is_accepted(client, settings, organization, open_session):
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = deliver(client, completed(organization))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payments_unavailable"
    assert StripeEvent.objects.count() == 0
    assert snapshot(organization) == (0, 0, 0)


def test_only_post_is_allowed(client):
    assert client.get(URL).status_code == 405
    assert StripeEvent.objects.count() == 0


# --- subscriptions ------------------------------------------------------------------------------


def test_subscription_created_sets_the_tier_and_deleted_returns_to_free(client, organization, vip):
    created = event(
        "customer.subscription.created",
        subscription("sub_1", price_id="price_vip", organization_id=organization.pk),
    )
    assert deliver(client, created).status_code == 200
    organization.refresh_from_db()
    assert (organization.tier.code, organization.stripe_subscription_id) == ("VIP", "sub_1")
    assert organization.stripe_customer_id == "cus_test_1"

    deleted = event(
        "customer.subscription.deleted",
        subscription("sub_1", price_id="price_vip", status="canceled"),
    )
    assert deliver(client, deleted).status_code == 200
    organization.refresh_from_db()
    assert (organization.tier.code, organization.stripe_subscription_id) == ("FREE", "")
    assert LedgerEntry.objects.count() == 0


@pytest.mark.parametrize(
    ("status", "tier"),
    [
        ("active", "VIP"),
        ("trialing", "VIP"),
        ("past_due", "PREMIUM"),
        ("incomplete", "PREMIUM"),
        ("canceled", "FREE"),
        ("unpaid", "FREE"),
    ],
)
def test_subscription_updates_follow_the_status(client, organization, vip, status, tier):
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.stripe_subscription_id = "sub_1"
    organization.save()
    payload = event(
        "customer.subscription.updated",
        subscription("sub_1", price_id="price_vip", status=status, organization_id=organization.pk),
    )
    assert deliver(client, payload).status_code == 200
    organization.refresh_from_db()
    assert organization.tier.code == tier


def test_subscription_found_by_customer_when_metadata_is_missing(client, organization, vip):
    organization.stripe_customer_id = "cus_known"
    organization.save()
    payload = event(
        "customer.subscription.created",
        subscription("sub_2", price_id="price_vip", customer="cus_known"),
    )
    deliver(client, payload)
    organization.refresh_from_db()
    assert organization.tier.code == "VIP"


def test_a_stale_subscription_event_changes_nothing(client, organization, vip):
    now = int(time.time())
    deleted = event(
        "customer.subscription.deleted",
        subscription(
            "sub_1", price_id="price_vip", status="canceled", organization_id=organization.pk
        ),
        created=now,
    )
    late_created = event(
        "customer.subscription.created",
        subscription("sub_1", price_id="price_vip", organization_id=organization.pk),
        created=now - 60,
    )
    deliver(client, deleted)
    deliver(client, late_created)
    organization.refresh_from_db()
    assert organization.tier.code == "FREE"
    assert StripeEvent.objects.get(type="customer.subscription.created").error == (
        "A newer event for subscription sub_1 was applied already."
    )


def test_ending_an_old_subscription_keeps_the_current_one(client, organization, vip):
    organization.tier = vip
    organization.stripe_subscription_id = "sub_new"
    organization.save()
    payload = event(
        "customer.subscription.deleted",
        subscription(
            "sub_old", price_id="price_vip", status="canceled", organization_id=organization.pk
        ),
    )
    deliver(client, payload)
    organization.refresh_from_db()
    assert (organization.tier.code, organization.stripe_subscription_id) == ("VIP", "sub_new")


def test_a_subscription_to_an_unknown_price_changes_nothing(client, organization, vip):
    payload = event(
        "customer.subscription.created",
        subscription("sub_1", price_id="price_other", organization_id=organization.pk),
    )
    deliver(client, payload)
    organization.refresh_from_db()
    assert (organization.tier.code, organization.stripe_subscription_id) == ("FREE", "")
    assert StripeEvent.objects.get().error == (
        "No membership tier is sold with the price(s) price_other."
    )


def test_subscription_checkout_completion_links_the_subscription(client, organization, vip):
    CheckoutSession.objects.create(
        session_id="cs_sub", organization=organization, kind=CheckoutKind.SUBSCRIPTION, tier=vip
    )
    payload = event(
        "checkout.session.completed",
        checkout_session(
            "cs_sub", organization_id=organization.pk, mode="subscription", subscription="sub_9"
        ),
    )
    deliver(client, payload)
    organization.refresh_from_db()
    assert (organization.stripe_customer_id, organization.stripe_subscription_id) == (
        "cus_test_1",
        "sub_9",
    )
    assert CheckoutSession.objects.get(session_id="cs_sub").status == CheckoutStatus.SUBSCRIBED
    assert LedgerEntry.objects.count() == 0


# --- refunds ------------------------------------------------------------------------------------


def credited(client, organization):
    deliver(client, completed(organization))
    assert snapshot(organization) == (350_000, 0, 1)


def test_a_full_refund_claws_back_the_tokens(client, organization, open_session):
    credited(client, organization)
    payload = event(
        "charge.refunded",
        charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=1000),
    )
    assert deliver(client, payload).status_code == 200
    entry = LedgerEntry.objects.filter(kind=EntryKind.REFUND).get()
    assert (entry.delta_available, entry.stripe_object_id, entry.idempotency_key) == (
        -350_000,
        "ch_1",
        "stripe:refund:ch_1:1000",
    )
    assert entry.reason == (
        "Stripe refund on charge ch_1: 1000 of 1000 CNY (minor units) refunded, "
        "350000 tokens to claw back"
    )
    assert snapshot(organization) == (0, 0, 2)


def test_partial_refunds_claw_back_their_share_step_by_step(client, organization, open_session):
    credited(client, organization)
    first = event(
        "charge.refunded",
        charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=250),
    )
    second = event(
        "charge.refunded",
        charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=600),
    )
    deliver(client, first)
    assert snapshot(organization) == (262_500, 0, 2)
    deliver(client, second)
    assert snapshot(organization) == (140_000, 0, 3)
    open_session.refresh_from_db()
    assert open_session.tokens_refunded == 210_000
    # The older step delivered again (new event id, same state) owes nothing more.
    deliver(client, first)
    assert snapshot(organization) == (140_000, 0, 3)


def test_a_refund_of_spent_tokens_never_goes_negative(client, organization, open_session, fund):
    credited(client, organization)
    from apps.billing.ledger import ledger_adjust

    ledger_adjust(
        organization=organization,
        amount=-300_000,
        reason="spent",
        operator=None,
        idempotency_key="spend",
    )
    payload = event(
        "charge.refunded",
        charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=1000),
    )
    deliver(client, payload)
    entry = LedgerEntry.objects.filter(kind=EntryKind.REFUND).get()
    assert entry.delta_available == -50_000
    assert entry.reason.endswith(
        "(shortfall: 300000 of 350000 tokens were already spent and could not be clawed back)"
    )
    assert snapshot(organization) == (0, 0, 3)


def test_a_refund_of_a_charge_we_never_credited_changes_nothing(client, organization):
    payload = event(
        "charge.refunded",
        charge("ch_x", payment_intent="pi_unknown", amount=1000, amount_refunded=1000),
    )
    assert deliver(client, payload).status_code == 200
    assert StripeEvent.objects.get().error == "Charge ch_x paid for no top-up credited here."
    assert LedgerEntry.objects.count() == 0


@pytest.mark.parametrize("steps", [[1000], [250, 600]], ids=["full", "partial"])
def test_refunds_delivered_before_their_payment_are_clawed_back_once_it_is_credited(
    client, organization, open_session, steps
):
    refunds = [
        event(
            "charge.refunded",
            charge("ch_1", payment_intent="pi_test_1", amount=1000, amount_refunded=refunded),
        )
        for refunded in steps
    ]
    for payload in refunds:
        assert deliver(client, payload).status_code == 200
    assert snapshot(organization) == (0, 0, 0)  # nothing credited yet, nothing to take back

    assert deliver(client, completed(organization)).status_code == 200
    owed = 350_000 * steps[-1] // 1000
    assert snapshot(organization) == (350_000 - owed, 0, 1 + len(steps))
    clawed = list(
        LedgerEntry.objects.filter(kind=EntryKind.REFUND)
        .order_by("id")
        .values_list("delta_available", "idempotency_key")
    )
    assert sum(delta for delta, _key in clawed) == -owed
    assert clawed[-1][1] == f"stripe:refund:ch_1:{steps[-1]}"
    open_session.refresh_from_db()
    assert (open_session.status, open_session.tokens_refunded) == (CheckoutStatus.CREDITED, owed)
    assert set(
        StripeEvent.objects.filter(type="charge.refunded").values_list("error", flat=True)
    ) == {"Applied when Checkout Session cs_test_a was credited."}

    # Redelivered afterwards, in any order, they owe nothing more.
    for payload in reversed(refunds):
        assert deliver(client, payload).status_code == 200
    assert snapshot(organization) == (350_000 - owed, 0, 1 + len(steps))


def test_a_completed_session_that_needs_no_payment_is_credited(client, organization, open_session):
    assert (
        deliver(client, completed(organization, payment_status="no_payment_required")).status_code
        == 200
    )
    assert snapshot(organization) == (350_000, 0, 1)
    open_session.refresh_from_db()
    assert open_session.status == CheckoutStatus.CREDITED


@pytest.mark.parametrize("tolerance", [0, -5])
def test_a_tolerance_that_is_not_positive_still_rejects_old_signatures(
    client, settings, organization, open_session, tolerance
):
    settings.STRIPE_WEBHOOK_TOLERANCE = tolerance
    payload = completed(organization)
    response = deliver(client, payload, sign(payload, timestamp=int(time.time()) - 3600))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert StripeEvent.objects.count() == 0
    assert snapshot(organization) == (0, 0, 0)
    # A fresh signature is still accepted.
    assert deliver(client, payload).status_code == 200
    assert snapshot(organization) == (350_000, 0, 1)


def _deliver(payload: bytes) -> int:
    response = Client().post(
        URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload)
    )
    return response.status_code


def test_a_full_refund_while_the_tokens_are_held_takes_them_back_when_released():
    """The purchased tokens are all held by a queued task when the purchase is refunded in full:
    nothing is available to take, but the tokens are not spent either. Cancelling the task
    gives the hold back, and the refund takes it then (``Balance.clawback_pending``); before,
    the held tokens counted as spent and the customer kept both the money and the tokens."""
    organization = OrganizationFactory()
    CheckoutSession.objects.create(
        session_id="cs_held",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        tokens=700_000,
        amount=2000,
        currency="cny",
    )
    assert (
        _deliver(
            event(
                "checkout.session.completed",
                checkout_session("cs_held", organization_id=organization.pk, payment_intent="pi_h"),
            )
        )
        == 200
    )
    assert Balance.objects.get(organization=organization).available == 700_000

    # The customer queues tasks holding every purchased token …
    task = new_task(organization)
    ledger_hold(task=task, amount=700_000)
    # … the payment is refunded in full while they wait …
    assert (
        _deliver(
            event(
                "charge.refunded",
                charge("ch_h", payment_intent="pi_h", amount=2000, amount_refunded=2000),
            )
        )
        == 200
    )
    assert CheckoutSession.objects.get().tokens_refunded == 700_000
    assert Balance.objects.get(organization=organization).clawback_pending == 700_000
    # … and then cancels them: the hold comes back as available tokens.
    task_cancel(organization=organization, task_id=task.pk)

    balance = Balance.objects.get(organization=organization)
    assert ledger_audit().ok
    assert balance.available == 0, (
        f"a fully refunded purchase left {balance.available} tokens to the customer"
    )
