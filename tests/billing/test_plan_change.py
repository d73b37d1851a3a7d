"""Changing plan from the dashboard: prices read from Stripe (cached), Checkout for a first
subscription, the customer portal for a subscriber."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from apps.accounts.models import MembershipTier, Organization, User
from apps.billing.stripe_service import billing_portal_create, tier_prices
from apps.core.errors import PermissionDenied, ValidationFailed
from tests.billing.stripe_fakes import FakeStripe
from tests.dashboard.helpers import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def stripe_fake(settings: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe(prices={"price_vip": (9_900, "cny", "month")}).start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    cache.clear()
    yield fake
    fake.stop()
    cache.clear()


def test_tier_prices_come_from_stripe_once(stripe_fake: FakeStripe) -> None:
    MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")
    MembershipTier.objects.filter(code="PREMIUM").update(stripe_price_id="price_gone")
    tiers = list(MembershipTier.objects.order_by("sort_order"))
    first = tier_prices(tiers=tiers)
    assert {code: (p.amount, p.currency, p.interval) for code, p in first.items()} == {
        "VIP": (9_900, "cny", "month")
    }
    asked = len(stripe_fake.requests)
    assert tier_prices(tiers=tiers) == first
    # Cached: only the price Stripe could not answer is asked again.
    assert [r.path for r in stripe_fake.requests[asked:]] == ["/v1/prices/price_gone"]


def test_no_prices_without_stripe(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""
    MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")
    assert tier_prices(tiers=list(MembershipTier.objects.all())) == {}


def test_portal_needs_a_stripe_customer_and_the_billing_role(
    stripe_fake: FakeStripe, organization: Organization, owner: User, member: User
) -> None:
    with pytest.raises(ValidationFailed, match="no Stripe subscription"):
        billing_portal_create(organization=organization, user=owner, return_url="https://x/")
    organization.stripe_customer_id = "cus_123"
    organization.save(update_fields=["stripe_customer_id"])
    with pytest.raises(PermissionDenied):
        billing_portal_create(organization=organization, user=member, return_url="https://x/")
    assert not stripe_fake.requests
    url = billing_portal_create(organization=organization, user=owner, return_url="https://x/")
    assert url.startswith("https://billing.stripe.test/p/session/")
    assert stripe_fake.requests[-1].form == {"customer": "cus_123", "return_url": "https://x/"}


def test_billing_page_offers_checkout_then_the_portal(
    stripe_fake: FakeStripe, organization: Organization, owner: User
) -> None:
    MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")
    client = login(owner)
    page = client.get("/billing/").content.decode()
    assert "99.00 CNY / month" in page
    assert "Upgrade to VIP" in page and "Manage or cancel" not in page
    organization.stripe_customer_id = "cus_123"
    organization.tier = MembershipTier.objects.get(code="VIP")
    organization.save(update_fields=["stripe_customer_id", "tier"])
    page = client.get("/billing/").content.decode()
    assert "Upgrade to" not in page
    assert "Switch to Free in Stripe" in page and "Manage or cancel the subscription" in page
    response = client.post("/billing/portal/")
    assert response.status_code == 302
    assert response["Location"].startswith("https://billing.stripe.test/p/session/")
    assert stripe_fake.requests[-1].form["return_url"].endswith("/billing/")
