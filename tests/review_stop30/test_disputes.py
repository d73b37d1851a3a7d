"""Review of the Stripe disputes (b9e30ee): a won dispute gives back what its withdrawal took,
and drops the earmark it left on held tokens, also in an organization that had an unrelated
refund long before."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_clawback, ledger_hold, ledger_topup
from apps.billing.models import Balance, CheckoutKind, CheckoutSession, TokenPackage
from apps.tasks.services.cancel import task_cancel
from tests.billing.helpers import new_task
from tests.billing.stripe_fakes import WEBHOOK_SECRET, checkout_session, dispute, event, sign

pytestmark = pytest.mark.django_db

URL = "/billing/stripe/webhook"
TOKENS = 350_000


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


def _ok(client: Client, payload: bytes) -> None:
    response = client.post(
        URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload)
    )
    assert response.status_code == 200, response.content


def _dispute(event_type: str, *, reinstated: int | None = None, status: str) -> bytes:
    return event(
        event_type,
        dispute(
            "dp_1",
            charge="ch_1",
            payment_intent="pi_test_1",
            amount=1000,
            status=status,
            withdrawn=1000,
            reinstated=reinstated,
        ),
    )


def test_a_won_dispute_drops_its_earmark_despite_an_old_settled_refund(organization, owner):
    # Long ago: another purchase, refunded in full while nothing was held. Its clawback took
    # everything from available and earmarked nothing.
    ledger_topup(organization=organization, amount=1_000, idempotency_key="stripe:checkout:cs_old")
    ledger_clawback(
        organization=organization,
        amount=1_000,
        reason="Stripe refund on charge ch_old",
        idempotency_key="stripe:refund:ch_old:1000",
    )
    assert Balance.objects.get(organization=organization).clawback_pending == 0

    package = TokenPackage.objects.create(name="Starter", tokens=TOKENS, price_amount=1000)
    CheckoutSession.objects.create(
        session_id="cs_test_a",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        package=package,
        tokens=TOKENS,
        amount=1000,
        currency="cny",
        created_by=owner,
    )
    client = Client(enforce_csrf_checks=True)
    _ok(
        client,
        event(
            "checkout.session.completed",
            checkout_session("cs_test_a", organization_id=organization.pk),
        ),
    )
    everything = Balance.objects.get(organization=organization).available
    task = new_task(organization, status="NOT_START")
    ledger_hold(task=task, amount=everything)

    _ok(client, _dispute("charge.dispute.funds_withdrawn", status="needs_response"))
    assert Balance.objects.get(organization=organization).clawback_pending == TOKENS

    # The bank sides with the merchant: Stripe gives all the money back.
    _ok(client, _dispute("charge.dispute.funds_reinstated", reinstated=1000, status="won"))
    balance = Balance.objects.get(organization=organization)
    assert balance.clawback_pending == 0, "the won dispute's earmark still takes held tokens"

    task_cancel(organization=organization, task_id=task.pk)
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held, balance.clawback_pending) == (everything, 0, 0)
    assert ledger_audit().ok


def test_an_earmark_shared_with_an_earlier_refund_is_not_handed_back(organization, owner):
    """The guard the fix keeps: while an earlier refund's earmark may still be pending (held
    tokens never ran out since), collections cannot be told apart, so none are given back."""
    ledger_topup(organization=organization, amount=1_000, idempotency_key="stripe:checkout:old")
    first = new_task(organization, status="NOT_START")
    ledger_hold(task=first, amount=1_000)
    ledger_clawback(
        organization=organization,
        amount=1_000,
        reason="Stripe refund on charge ch_old",
        idempotency_key="stripe:refund:ch_old:1000",
    )
    assert Balance.objects.get(organization=organization).clawback_pending == 1_000

    package = TokenPackage.objects.create(name="Starter", tokens=TOKENS, price_amount=1000)
    CheckoutSession.objects.create(
        session_id="cs_test_a",
        organization=organization,
        kind=CheckoutKind.TOPUP,
        package=package,
        tokens=TOKENS,
        amount=1000,
        currency="cny",
        created_by=owner,
    )
    client = Client(enforce_csrf_checks=True)
    _ok(
        client,
        event(
            "checkout.session.completed",
            checkout_session("cs_test_a", organization_id=organization.pk),
        ),
    )
    second = new_task(organization, status="NOT_START")
    ledger_hold(task=second, amount=Balance.objects.get(organization=organization).available)
    _ok(client, _dispute("charge.dispute.funds_withdrawn", status="needs_response"))
    task_cancel(organization=organization, task_id=first.pk)  # collects 1,000 of the pending
    _ok(client, _dispute("charge.dispute.funds_reinstated", reinstated=1000, status="won"))

    balance = Balance.objects.get(organization=organization)
    # Nothing given back for the 1,000 collected: they may have been the old refund's.
    assert balance.available == 0
    assert ledger_audit().ok
