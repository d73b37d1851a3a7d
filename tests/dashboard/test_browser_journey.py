"""The whole dashboard in a real browser, against a live server and a real Celery worker.

One person signs up, verifies their e-mail, sees the sign-up grant, creates an image and
watches it render, presses U1, varies a region with a drawn mask, creates and revokes an API
key, adds a webhook endpoint and sends it a test event, buys tokens through a local Stripe
fake, and invites a second person who accepts. Screenshots of every main page are written to
artifacts/screenshots/ at desktop and phone width.
"""

from __future__ import annotations

import io
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core import mail
from PIL import Image
from standardwebhooks.webhooks import Webhook

from apps.accounts.models import Membership, Organization, Role, User
from apps.api_keys.models import ApiKey, hash_key
from apps.billing.models import Balance, TokenPackage
from apps.engines.services import upstream_account_create
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.storage import read_file
from apps.webhooks.models import DeliveryState, WebhookDelivery
from tests.billing.stripe_fakes import WEBHOOK_SECRET, FakeStripe, checkout_session, event, sign

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

PASSWORD = "correct-horse-battery-42"
#: A task in the sandbox takes 1 s; allow for a slow shared machine.
TASK_TIMEOUT_MS = 45_000
PRICES = {"IMAGINE": 14_000, "UPSCALE": 3_500, "VARIATION": 14_000}


def wait_until(condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Explicit wait on something outside the browser (the database, a receiver)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def mail_link(to: str, pattern: str) -> str:
    for message in reversed(mail.outbox):
        if to in message.to:
            found = re.search(pattern, message.body)
            if found:
                return found.group(0)
    raise AssertionError(f"no e-mail to {to} with a link matching {pattern}")


def sign_up(
    page: Any, base: str, email: str, screenshot: Callable[..., None] | None = None
) -> None:
    page.goto(f"{base}/accounts/signup/")
    if screenshot:
        screenshot(page, "signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url(re.compile(r"/accounts/confirm-email/"))
    link = mail_link(email, r"https?://\S+/accounts/confirm-email/[^\s/]+/")
    page.goto(link)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"^[^?]*/(\?.*)?$"))


def card(page: Any, task_id: str) -> Any:
    return page.locator(f"#task-{task_id}")


def newest_card_id(page: Any, count_before: int) -> str:
    from playwright.sync_api import expect

    cards = page.locator("#task-feed article.task-card")
    expect(cards).to_have_count(count_before + 1)
    return str(cards.first.get_attribute("data-task-id"))


def wait_success(page: Any, task_id: str) -> None:
    from playwright.sync_api import expect

    expect(card(page, task_id)).to_have_attribute("data-status", "SUCCESS", timeout=TASK_TIMEOUT_MS)
    expect(card(page, task_id).locator("[data-testid=task-image]")).to_be_visible()


def test_dashboard_journey(
    live_server: Any,
    settings: Any,
    shared_media: Any,
    celery_worker_factory: Callable[..., Any],
    new_page: Callable[[], Any],
    screenshot: Callable[[Any, str], None],
    receiver: Any,
    csp_violations: list[str],
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    settings.PUBLIC_BASE_URL = base
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    stripe_fake = FakeStripe().start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = stripe_fake.url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    # The fake's Checkout page is on its own origin: the buy form's redirect must be allowed.
    policy = settings.CONTENT_SECURITY_POLICY
    settings.CONTENT_SECURITY_POLICY = {
        **policy,
        "form-action": [*policy["form-action"], "https://checkout.stripe.test"],
    }
    celery_worker_factory(WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="true")
    upstream_account_create(
        engine="sandbox",
        name="journey-sandbox",
        modes=["FAST", "RELAX", "TURBO"],
        concurrency=3,
        options={"duration": "1"},
    )
    package = TokenPackage.objects.create(
        name="Starter", tokens=350_000, price_amount=1_000, currency="cny"
    )

    try:
        # --- Anonymous pages ---------------------------------------------------------------
        page = new_page()
        page.goto(f"{base}/accounts/login/")
        expect(page.get_by_role("heading", name="Sign In")).to_be_visible()
        screenshot(page, "login")

        # --- Sign up → verify → overview with the sign-up grant -----------------------------
        email = "ada@example.com"
        sign_up(page, base, email, screenshot)
        user = User.objects.get(email=email)
        organization = Organization.objects.get(memberships__user=user)
        grant = django_settings.SIGNUP_GRANT_TOKENS
        page.goto(f"{base}/")
        expect(page.get_by_test_id("available-tokens")).to_have_text(f"{grant:,}")
        expect(page.get_by_test_id("held-tokens")).to_have_text("0")
        expect(page.get_by_test_id("unfinished")).to_have_text("0 of 3 unfinished tasks")
        screenshot(page, "overview-empty")
        page.goto(f"{base}/accounts/2fa/")
        expect(page.get_by_role("heading", name="Two-Factor Authentication")).to_be_visible()
        screenshot(page, "account-security")

        # --- Create an image and watch it render --------------------------------------------
        page.get_by_role("link", name="Create", exact=True).click()
        page.fill("#id_prompt", "a lighthouse on a cliff at dawn, watercolor")
        page.get_by_role("button", name="Generate").click()
        imagine_id = newest_card_id(page, 0)
        # Progress is shown live until the result appears, without reloading the page.
        expect(card(page, imagine_id).get_by_role("progressbar")).to_be_visible()
        wait_success(page, imagine_id)
        url_before = page.url
        imagine = Task.objects.get(pk=imagine_id)
        assert (imagine.organization_id, imagine.action, imagine.protocol) == (
            organization.pk,
            Action.IMAGINE,
            "dashboard",
        )
        assert imagine.created_by_id == user.pk

        # --- Press U1: the upscale appears in place ------------------------------------------
        card(page, imagine_id).locator("button[data-custom-id^='MJ::JOB::upsample::1::']").click()
        upscale_id = newest_card_id(page, 1)
        wait_success(page, upscale_id)
        upscale = Task.objects.get(pk=upscale_id)
        assert (upscale.action, upscale.parent_id, upscale.params["index"]) == (
            Action.UPSCALE,
            imagine_id,
            1,
        )
        assert page.url == url_before  # in place: no navigation happened

        # --- Vary (Region) with a mask drawn on a canvas -------------------------------------
        card(page, upscale_id).locator("button[data-custom-id^='MJ::Inpaint::']").click()
        dialog = page.locator("dialog.modal[open]")
        expect(dialog).to_be_visible()
        canvas = dialog.get_by_test_id("mask-canvas")
        expect(canvas).to_be_visible()
        submit = dialog.get_by_role("button", name="Submit")
        expect(submit).to_be_disabled()
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=8)
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.7, steps=8)
        page.mouse.up()
        expect(submit).to_be_enabled()
        screenshot(page, "vary-region")
        submit.click()
        expect(page.locator("dialog.modal[open]")).to_have_count(0)
        vary_id = newest_card_id(page, 2)
        wait_success(page, vary_id)
        vary = Task.objects.get(pk=vary_id)
        assert (vary.action, vary.parent_id, vary.params["variant"]) == (
            Action.VARIATION,
            upscale_id,
            "inpaint",
        )
        with Image.open(io.BytesIO(read_file(vary.params["mask"]))) as mask:
            colors = {color for _, color in mask.convert("L").getcolors(maxcolors=1 << 16) or []}
            width, height = mask.size
        upscale_size = (upscale.result["width"], upscale.result["height"])
        assert (width, height) == upscale_size
        assert 0 in colors and 255 in colors  # white strokes on black
        screenshot(page, "create")

        spent = PRICES["IMAGINE"] + PRICES["UPSCALE"] + PRICES["VARIATION"]
        page.goto(f"{base}/")
        expect(page.get_by_test_id("available-tokens")).to_have_text(f"{grant - spent:,}")
        expect(page.get_by_test_id("held-tokens")).to_have_text("0")
        screenshot(page, "overview")

        page.goto(f"{base}/tasks/{upscale_id}/")
        expect(page.get_by_role("heading", name="Ledger entries")).to_be_visible()
        expect(page.locator("table.data").first).to_contain_text("Capture")
        screenshot(page, "task-detail")
        page.goto(f"{base}/gallery/")
        expect(page.locator("a.tile")).to_have_count(3)
        screenshot(page, "gallery")
        page.goto(f"{base}/tasks/?action=UPSCALE")
        expect(page.locator("table.data tbody tr")).to_have_count(1)
        page.goto(f"{base}/tasks/")
        expect(page.locator("table.data tbody tr")).to_have_count(3)
        screenshot(page, "history")

        # --- API key: created with flags, the secret shown once, then revoked -----------------
        page.goto(f"{base}/keys/")
        page.fill("#id_name", "Journey key")
        page.check("#id_read_only")
        page.fill("#id_allowed_ips", "127.0.0.1, 10.0.0.0/8")
        page.get_by_role("button", name="Create key").click()
        secret = page.get_by_test_id("new-key").inner_text().strip()
        assert secret.startswith("mjg_live_")
        key = ApiKey.objects.get(organization=organization, name="Journey key")
        assert key.key_hash == hash_key(secret)
        assert (key.read_only, key.can_midjourney, key.allowed_ips) == (
            True,
            True,
            ["127.0.0.1/32", "10.0.0.0/8"],
        )
        page.goto(f"{base}/keys/")
        assert secret not in page.content()
        assert key.prefix in page.content()
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Revoke Journey key").click()
        expect(page.locator(f"tr[data-key-id='{key.pk}']")).to_contain_text("Revoked")
        key.refresh_from_db()
        assert key.revoked_at is not None
        screenshot(page, "keys")

        # --- Webhook endpoint and a signed test event ------------------------------------------
        page.goto(f"{base}/webhooks/")
        page.fill("input[name=url]", receiver.url("/mjgate"))
        page.fill("input[name=description]", "Journey receiver")
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.get_by_text("Endpoint added.")).to_be_visible()
        page.get_by_role("button", name=f"Send test to {receiver.url('/mjgate')}").click()
        expect(page.get_by_text("Test event queued")).to_be_visible()
        request = wait_until(
            lambda: next(
                (
                    r
                    for r in receiver.requests
                    if r["path"] == "/mjgate" and '"webhook.test"' in r["body"]
                ),
                None,
            ),
            what="the test event at the receiver",
        )
        page.get_by_text("Reveal secret").click()
        webhook_secret = page.get_by_test_id("webhook-secret").inner_text().strip()
        assert webhook_secret.startswith("whsec_")
        Webhook(webhook_secret).verify(request["body"], request["headers"])
        wait_until(
            lambda: WebhookDelivery.objects.filter(
                organization=organization,
                state=DeliveryState.SUCCEEDED,
                event__event_type="webhook.test",
            ).exists(),
            what="the test delivery to be recorded",
        )
        page.goto(f"{base}/webhooks/")
        expect(page.get_by_test_id("delivery-state").first).to_have_text("Succeeded")
        screenshot(page, "webhooks")

        # --- Buy tokens through Stripe Checkout (local fake) ----------------------------------
        page.route(
            "https://checkout.stripe.test/**",
            lambda route: route.fulfill(
                status=200,
                content_type="text/html",
                body=(
                    "<!doctype html><title>Checkout</title><h1>Fake Stripe Checkout</h1>"
                    f"<a id='pay' href='{stripe_fake.requests[-1].form['success_url']}'>Pay</a>"
                ),
            ),
        )
        page.goto(f"{base}/billing/")
        available_before = Balance.objects.get(organization=organization).available
        assert available_before == grant - spent
        page.get_by_role("button", name="Buy Starter: 350,000 tokens").click()
        page.wait_for_url(re.compile(r"^https://checkout\.stripe\.test/c/pay/cs_test_"))
        session_id = page.url.rsplit("/", 1)[-1]
        sent = stripe_fake.requests[-1].form
        assert (sent["mode"], sent["metadata[organization_id]"], sent["metadata[tokens]"]) == (
            "payment",
            str(organization.pk),
            "350000",
        )
        # Stripe calls our webhook once the customer has paid; the signature is checked.
        payload = event(
            "checkout.session.completed",
            checkout_session(
                session_id, organization_id=organization.pk, package_id=package.pk, tokens=350_000
            ),
        )
        webhook = urllib.request.Request(
            f"{base}/billing/stripe/webhook",
            data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)},
            method="POST",
        )
        with urllib.request.urlopen(webhook, timeout=10) as response:
            assert response.status == 200
        page.click("#pay")
        page.wait_for_url(re.compile(r"/billing/\?checkout=success"))
        expect(page.get_by_test_id("billing-available")).to_have_text(
            f"{available_before + 350_000:,}"
        )
        expect(page.get_by_text("Stripe Checkout: Starter")).to_be_visible()
        screenshot(page, "billing")

        # --- Invite a member who accepts --------------------------------------------------------
        invitee_email = "grace@example.com"
        page.goto(f"{base}/team/")
        page.fill("#id_email", invitee_email)
        page.select_option("#id_role", Role.MEMBER)
        page.get_by_role("button", name="Send invitation").click()
        expect(page.get_by_text(f"Invitation sent to {invitee_email}.")).to_be_visible()
        link = mail_link(invitee_email, r"https?://\S+/invitations/[^\s/]+/")
        assert link.startswith(base)

        guest = new_page()
        guest.goto(link)
        expect(guest.get_by_role("heading", name=f"Join {organization.name}")).to_be_visible()
        screenshot(guest, "invitation")
        sign_up(guest, base, invitee_email)
        guest.goto(link)
        guest.get_by_role("button", name="Accept invitation").click()
        expect(guest.get_by_text(f"Welcome to {organization.name}!")).to_be_visible()
        expect(guest.locator("#org-select option:checked")).to_have_text(organization.name)
        invitee = User.objects.get(email=invitee_email)
        assert Membership.objects.get(user=invitee, organization=organization).role == Role.MEMBER

        page.goto(f"{base}/team/")
        expect(page.locator(f"tr[data-member='{invitee_email}']")).to_be_visible()
        screenshot(page, "team")
        assert Task.objects.filter(organization=organization, status=Status.SUCCESS).count() == 3
        # The whole journey ran under the pages' Content-Security-Policy without one refusal.
        assert csp_violations == []
    finally:
        stripe_fake.stop()


@pytest.mark.django_db(transaction=True)
def test_phone_navigation_is_a_keyboard_friendly_drawer(
    live_server: Any, new_page: Callable[[], Any], screenshot: Callable[[Any, str], None]
) -> None:
    from playwright.sync_api import expect

    from tests.factories import MembershipFactory

    user = MembershipFactory(role=Role.OWNER).user
    page = new_page()
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", "pass-1234-word")
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"{live_server.url}/")
    menu = page.get_by_role("button", name="Open menu")
    sidebar = page.locator("#sidebar")
    expect(sidebar).not_to_be_in_viewport()
    menu.focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(sidebar).to_be_in_viewport()
    page.keyboard.press("Escape")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(sidebar).not_to_be_in_viewport()
    menu.click()
    page.get_by_role("link", name="Billing").click()
    page.wait_for_url(f"{live_server.url}/billing/")
    expect(page.get_by_role("heading", name="Billing", level=1)).to_be_visible()
