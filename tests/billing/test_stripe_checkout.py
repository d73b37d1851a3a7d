"""Starting Stripe Checkout through the real ``stripe`` library against a local fake server."""

from __future__ import annotations

import pytest

from apps.accounts.models import MembershipTier
from apps.billing.models import CheckoutKind, CheckoutSession, CheckoutStatus, TokenPackage
from apps.billing.stripe_service import checkout_create, subscription_checkout_create
from apps.core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    ValidationFailed,
)

from .helpers import snapshot
from .stripe_fakes import FakeStripe

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_stripe(settings):
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake_key"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_TIMEOUT = 5.0
    yield fake
    fake.stop()


@pytest.fixture
def package(db):
    return TokenPackage.objects.create(
        name="Starter", tokens=350_000, price_amount=1000, currency="cny"
    )


def test_checkout_sends_a_payment_session_and_records_it(fake_stripe, organization, owner, package):
    record = checkout_create(
        organization=organization,
        package=package,
        user=owner,
        success_url="https://app.test/ok",
        cancel_url="https://app.test/cancel",
    )

    (request,) = fake_stripe.requests
    assert request.path == "/v1/checkout/sessions"
    assert request.headers["authorization"] == "Bearer sk_test_fake_key"
    org, pkg = str(organization.pk), str(package.pk)
    assert request.form == {
        "mode": "payment",
        "client_reference_id": org,
        "success_url": "https://app.test/ok",
        "cancel_url": "https://app.test/cancel",
        "customer_email": owner.email,
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "cny",
        "line_items[0][price_data][unit_amount]": "1000",
        "line_items[0][price_data][product_data][name]": "Starter: 350,000 tokens",
        "metadata[organization_id]": org,
        "metadata[package_id]": pkg,
        "metadata[tokens]": "350000",
        "payment_intent_data[metadata][organization_id]": org,
        "payment_intent_data[metadata][package_id]": pkg,
        "payment_intent_data[metadata][tokens]": "350000",
    }
    assert record.session_id.startswith("cs_test_")
    assert record.url == f"https://checkout.stripe.test/c/pay/{record.session_id}"
    assert (record.organization, record.kind, record.package, record.status) == (
        organization,
        CheckoutKind.TOPUP,
        package,
        CheckoutStatus.OPEN,
    )
    assert (record.tokens, record.amount, record.currency, record.created_by) == (
        350_000,
        1000,
        "cny",
        owner,
    )
    # Starting a checkout moves no token: only the webhook credits.
    assert snapshot(organization) == (0, 0, 0)


def test_checkout_uses_the_packages_stripe_price_and_known_customer(
    fake_stripe, organization, owner, package, settings
):
    package.stripe_price_id = "price_starter"
    package.save()
    organization.stripe_customer_id = "cus_known"
    organization.save()
    checkout_create(organization=organization, package=package, user=owner)

    form = fake_stripe.requests[0].form
    assert form["line_items[0][price]"] == "price_starter"
    assert "line_items[0][price_data][currency]" not in form
    assert form["customer"] == "cus_known"
    assert "customer_email" not in form
    # The dashboard's billing page on PUBLIC_BASE_URL when no return URL is set or given.
    billing = f"{settings.PUBLIC_BASE_URL}/billing/"
    assert form["success_url"] == f"{billing}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
    assert form["cancel_url"] == f"{billing}?checkout=cancel"


def test_subscription_checkout_for_a_paid_tier(fake_stripe, organization, owner):
    vip = MembershipTier.objects.get(code="VIP")
    vip.stripe_price_id = "price_vip_monthly"
    vip.save()

    record = subscription_checkout_create(organization=organization, tier=vip, user=owner)

    org = str(organization.pk)
    assert fake_stripe.requests[0].form == {
        "mode": "subscription",
        "client_reference_id": org,
        "success_url": fake_stripe.requests[0].form["success_url"],
        "cancel_url": fake_stripe.requests[0].form["cancel_url"],
        "customer_email": owner.email,
        "line_items[0][price]": "price_vip_monthly",
        "line_items[0][quantity]": "1",
        "metadata[organization_id]": org,
        "metadata[tier]": "VIP",
        "subscription_data[metadata][organization_id]": org,
        "subscription_data[metadata][tier]": "VIP",
    }
    assert (record.kind, record.tier, record.package, record.tokens) == (
        CheckoutKind.SUBSCRIPTION,
        vip,
        None,
        0,
    )
    organization.refresh_from_db()
    assert organization.tier.code == "FREE"  # the tier changes when Stripe says it is paid


def _priced_tiers() -> tuple[MembershipTier, MembershipTier]:
    MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")
    MembershipTier.objects.filter(code="PREMIUM").update(stripe_price_id="price_premium")
    return MembershipTier.objects.get(code="VIP"), MembershipTier.objects.get(code="PREMIUM")


@pytest.mark.parametrize("subscription_id", ["sub_live", ""])
def test_a_subscriber_gets_no_second_subscription_checkout(
    fake_stripe, organization, owner, subscription_id
):
    """Once paying, plan changes go through the portal: a stale tab or a double submit of
    "Upgrade" must not open a second subscription, billed beside the first."""
    vip, premium = _priced_tiers()
    organization.stripe_customer_id = "cus_123"
    organization.stripe_subscription_id = subscription_id
    organization.tier = vip
    organization.save(update_fields=["stripe_customer_id", "stripe_subscription_id", "tier"])
    with pytest.raises(Conflict) as excinfo:
        subscription_checkout_create(organization=organization, tier=premium, user=owner)
    assert "billing portal" in excinfo.value.message
    assert fake_stripe.requests == []
    assert CheckoutSession.objects.count() == 0


def test_the_dashboards_upgrade_shows_the_refusal(fake_stripe, organization, owner):
    from tests.dashboard.helpers import login

    vip, _premium = _priced_tiers()
    organization.stripe_customer_id = "cus_123"
    organization.stripe_subscription_id = "sub_live"
    organization.tier = vip
    organization.save(update_fields=["stripe_customer_id", "stripe_subscription_id", "tier"])
    response = login(owner).post("/billing/upgrade/", {"tier": "PREMIUM"}, follow=True)
    assert "You already pay for the VIP plan" in response.content.decode()
    assert [r.path for r in fake_stripe.requests if r.method == "POST"] == []


def test_an_open_checkout_of_the_same_plan_is_answered_again(fake_stripe, organization, owner):
    vip, premium = _priced_tiers()
    first = subscription_checkout_create(organization=organization, tier=vip, user=owner)
    again = subscription_checkout_create(organization=organization, tier=vip, user=owner)
    assert again.pk == first.pk
    assert len(fake_stripe.requests) == 1
    # Another plan is another Checkout; a closed one is not offered again.
    other = subscription_checkout_create(organization=organization, tier=premium, user=owner)
    assert other.pk != first.pk
    CheckoutSession.objects.filter(pk=first.pk).update(status=CheckoutStatus.EXPIRED)
    fresh = subscription_checkout_create(organization=organization, tier=vip, user=owner)
    assert fresh.pk not in (first.pk, other.pk)
    assert len(fake_stripe.requests) == 3


def test_a_tier_without_stripe_price_cannot_be_bought(fake_stripe, organization, owner):
    premium = MembershipTier.objects.get(code="PREMIUM")
    with pytest.raises(ValidationFailed):
        subscription_checkout_create(organization=organization, tier=premium, user=owner)
    assert fake_stripe.requests == []
    assert CheckoutSession.objects.count() == 0


def test_without_stripe_keys_buying_is_unavailable(settings, organization, owner, package):
    settings.STRIPE_SECRET_KEY = ""
    vip = MembershipTier.objects.get(code="VIP")
    vip.stripe_price_id = "price_vip"
    vip.save()
    with pytest.raises(ServiceUnavailable) as excinfo:
        checkout_create(organization=organization, package=package, user=owner)
    assert excinfo.value.message.startswith("Payments are not configured")
    assert excinfo.value.code == "payments_unavailable"
    with pytest.raises(ServiceUnavailable):
        subscription_checkout_create(organization=organization, tier=vip, user=owner)
    assert CheckoutSession.objects.count() == 0
    assert snapshot(organization) == (0, 0, 0)


def test_only_owners_may_buy(fake_stripe, organization, member, admin_user, package):
    for user in (member, admin_user):
        with pytest.raises(PermissionDenied):
            checkout_create(organization=organization, package=package, user=user)
    assert fake_stripe.requests == []
    assert CheckoutSession.objects.count() == 0


def test_outsiders_cannot_buy_for_another_organization(
    fake_stripe, organization, outsider, package
):
    with pytest.raises(NotFound):
        checkout_create(organization=organization, package=package, user=outsider)
    assert fake_stripe.requests == []
    assert CheckoutSession.objects.count() == 0


def test_an_inactive_package_is_not_on_sale(fake_stripe, organization, owner, package):
    package.is_active = False
    package.save()
    with pytest.raises(NotFound):
        checkout_create(organization=organization, package=package, user=owner)
    assert fake_stripe.requests == []
    assert CheckoutSession.objects.count() == 0


def test_a_stripe_error_is_reported_and_records_nothing(fake_stripe, organization, owner, package):
    fake_stripe.fail_with = 500
    with pytest.raises(ServiceUnavailable) as excinfo:
        checkout_create(organization=organization, package=package, user=owner)
    assert excinfo.value.code == "payments_failed"
    assert len(fake_stripe.requests) == 1
    assert CheckoutSession.objects.count() == 0
