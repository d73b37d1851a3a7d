"""The Content-Security-Policy in Chromium: markup injected into a dashboard page runs no script
and applies no style, and each refusal is reported (which is how every browser test, through
``new_page``, proves its pages need nothing the policy refuses). Stripe's Checkout is reached by
a redirect that answers the buy form, and browsers hold that redirect to ``form-action``: the
Checkout origin must be listed there."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from apps.billing.models import CheckoutSession, TokenPackage
from tests.billing.stripe_fakes import FakeStripe

from .browser import sign_in
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

INJECTED = (
    "<img id='injected' src='data:,' onerror='window.scriptRan = 1'>"
    "<p id='styled' style='color: rgb(255, 0, 0)'>styled</p>"
)


def wait_for(page: Any, condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Wait in the browser: Playwright reports console messages only while it is called."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


def test_injected_markup_runs_no_script_and_is_reported(
    live_server: Any, new_page: Callable[[], Any], csp_violations: list[str]
) -> None:
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, live_server.url, tenant.user.email)
    assert csp_violations == []  # the page itself needs nothing the policy refuses

    page.evaluate("html => document.body.insertAdjacentHTML('beforeend', html)", INJECTED)
    page.wait_for_function("() => document.getElementById('injected').complete")

    assert page.evaluate("() => window.scriptRan") is None
    color = page.evaluate("() => getComputedStyle(document.getElementById('styled')).color")
    assert color != "rgb(255, 0, 0)"
    wait_for(page, lambda: len(csp_violations) >= 2, "the refusals to be reported")
    assert any("script-src" in v for v in csp_violations), csp_violations
    assert any("style-src" in v for v in csp_violations), csp_violations
    csp_violations.clear()  # expected here; new_page fails a test on any left over


def test_the_checkout_redirect_needs_stripes_origin_in_form_action(
    live_server: Any, new_page: Callable[[], Any], csp_violations: list[str], settings: Any
) -> None:
    fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    try:
        TokenPackage.objects.create(
            name="Starter", tokens=350_000, price_amount=1_000, currency="cny"
        )
        tenant = seed_tenant()
        page = new_page()
        page.route(
            "https://checkout.stripe.test/**",
            lambda route: route.fulfill(
                status=200, content_type="text/html", body="<title>Stripe</title><h1>Pay</h1>"
            ),
        )
        sign_in(page, live_server.url, tenant.user.email, then="/billing/")
        buy = page.get_by_role("button", name="Buy Starter: 350,000 tokens")

        # The fake's Checkout origin is not in form-action: the browser stops the redirect.
        buy.click()
        wait_for(page, lambda: CheckoutSession.objects.count() == 1, "the Checkout Session")
        wait_for(page, lambda: any("form-action" in v for v in csp_violations), "the refusal")
        assert page.url == f"{live_server.url}/billing/"
        csp_violations.clear()

        # Listed, as https://checkout.stripe.com is in the real policy: the customer gets there.
        policy = settings.CONTENT_SECURITY_POLICY
        settings.CONTENT_SECURITY_POLICY = {
            **policy,
            "form-action": [*policy["form-action"], "https://checkout.stripe.test"],
        }
        page.goto(f"{live_server.url}/billing/")
        buy.click()
        page.wait_for_url(re.compile(r"^https://checkout\.stripe\.test/c/pay/cs_test_"))
        assert csp_violations == []
    finally:
        fake.stop()
