"""Where Stripe sends the customer back (Checkout's success and cancel URLs, the customer
portal's return URL) is built from PUBLIC_BASE_URL and the STRIPE_SUCCESS_URL /
STRIPE_CANCEL_URL settings, read when the Checkout starts; never from the request's Host, which
the client chooses (here with ALLOWED_HOSTS = ["*"], as a permissive deployment has it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from apps.accounts.models import MembershipTier, Organization, User
from apps.billing.models import CheckoutSession, TokenPackage
from tests.billing.stripe_fakes import FakeStripe

from .helpers import login

pytestmark = pytest.mark.django_db

PUBLIC = "https://mjgate.example.com"
FORGED = "evil.example.net"
SUCCESS = f"{PUBLIC}/billing/?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
CANCEL = f"{PUBLIC}/billing/?checkout=cancel"


@pytest.fixture
def stripe_fake(settings: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.ALLOWED_HOSTS = ["*"]
    settings.PUBLIC_BASE_URL = PUBLIC
    cache.clear()
    yield fake
    fake.stop()
    cache.clear()


@pytest.fixture
def package(db: None) -> TokenPackage:
    return TokenPackage.objects.create(
        name="Starter", tokens=350_000, price_amount=1_000, currency="cny"
    )


def _checkout_form(stripe_fake: FakeStripe) -> dict[str, str]:
    (request,) = [r for r in stripe_fake.requests if r.path == "/v1/checkout/sessions"]
    return request.form


def test_buying_tokens_on_a_forged_host_returns_to_the_public_address(
    stripe_fake: FakeStripe, owner: User, package: TokenPackage
) -> None:
    response = login(owner).post("/billing/buy/", {"package": package.pk}, HTTP_HOST=FORGED)

    form = _checkout_form(stripe_fake)
    assert (form["success_url"], form["cancel_url"]) == (SUCCESS, CANCEL)
    assert not [value for value in form.values() if FORGED in value]
    record = CheckoutSession.objects.get()
    assert (response.status_code, response["Location"]) == (302, record.url)


def test_a_plan_checkout_on_a_forged_host_returns_to_the_public_address(
    stripe_fake: FakeStripe, owner: User
) -> None:
    MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")

    response = login(owner).post("/billing/upgrade/", {"tier": "VIP"}, HTTP_HOST=FORGED)

    assert response.status_code == 302
    form = _checkout_form(stripe_fake)
    assert (form["mode"], form["success_url"], form["cancel_url"]) == (
        "subscription",
        SUCCESS,
        CANCEL,
    )


def test_the_customer_portal_on_a_forged_host_returns_to_the_public_address(
    stripe_fake: FakeStripe, owner: User, organization: Organization
) -> None:
    organization.stripe_customer_id = "cus_123"
    organization.save(update_fields=["stripe_customer_id"])

    response = login(owner).post("/billing/portal/", HTTP_HOST=FORGED)

    assert response.status_code == 302
    assert response["Location"].startswith("https://billing.stripe.test/p/session/")
    (request,) = stripe_fake.requests
    assert request.form == {"customer": "cus_123", "return_url": f"{PUBLIC}/billing/"}


def test_the_documented_settings_win_when_set(
    stripe_fake: FakeStripe, owner: User, package: TokenPackage, settings: Any
) -> None:
    settings.STRIPE_SUCCESS_URL = "https://shop.example.org/thanks?s={CHECKOUT_SESSION_ID}"
    settings.STRIPE_CANCEL_URL = "https://shop.example.org/cancelled"

    login(owner).post("/billing/buy/", {"package": package.pk}, HTTP_HOST=FORGED)

    form = _checkout_form(stripe_fake)
    assert (form["success_url"], form["cancel_url"]) == (
        "https://shop.example.org/thanks?s={CHECKOUT_SESSION_ID}",
        "https://shop.example.org/cancelled",
    )


def test_public_base_url_is_read_when_the_checkout_starts(
    stripe_fake: FakeStripe, owner: User, package: TokenPackage, settings: Any
) -> None:
    """A PUBLIC_BASE_URL set after the settings were loaded (as the live-server browser tests
    do) is the one Stripe is given: the default return URLs are not fixed at import."""
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8123"

    login(owner).post("/billing/buy/", {"package": package.pk})

    form = _checkout_form(stripe_fake)
    assert (form["success_url"], form["cancel_url"]) == (
        "http://127.0.0.1:8123/billing/?checkout=success&session_id={CHECKOUT_SESSION_ID}",
        "http://127.0.0.1:8123/billing/?checkout=cancel",
    )
