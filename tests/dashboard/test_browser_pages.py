"""Issue 16 in a real browser: every dashboard page fits 1280 and 375 px and passes axe-core;
keys, webhooks, ledger, mailbox, favicon and the API docs as a developer meets them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from apps.accounts.models import MembershipTier
from apps.accounts.services import invitation_create
from apps.api_keys.models import ApiKey
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.billing.stripe_fakes import FakeStripe
from tests.factories import MembershipFactory, TaskFactory

from .browser import accessible, fits, sign_in
from .seed import PRICE, seed_deliveries, seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_every_dashboard_page_fits_both_widths_and_passes_axe(
    live_server: Any, new_page: Callable[[], Any], settings: Any, tmp_path: Path
) -> None:
    base = live_server.url
    settings.MAILBOX_DIR = str(tmp_path / "mailbox")
    tenant = seed_tenant()
    seed_deliveries(tenant.organization, tenant.imagine)
    _, token = invitation_create(
        actor=tenant.user, organization=tenant.organization, email="grace@example.com"
    )
    waiting = TaskFactory(
        organization=tenant.organization,
        status=Status.MODAL,
        action=Action.VARIATION,
        parent=tenant.upscale,
        params={"variant": "inpaint"},
        prompt="a lighthouse on a cliff at dawn",
    )
    page = new_page()
    # Every page is checked before the test fails, so one run lists every problem.
    problems: list[str] = []
    # Anonymous pages first.
    for path, name in (
        ("/accounts/login/", "login"),
        ("/accounts/signup/", "signup"),
        ("/dev/mailbox/", "mailbox"),
        ("/status/", "status"),
    ):
        page.goto(f"{base}{path}")
        fits(page, f"i16-{name}", problems)
        accessible(page, name, problems)
    sign_in(page, base, tenant.user.email)
    pages = [
        ("/", "overview"),
        ("/create/", "create"),
        ("/gallery/", "gallery"),
        ("/tasks/", "history"),
        (f"/tasks/{tenant.imagine.pk}/", "task-detail"),
        (f"/tasks/{tenant.failed.pk}/", "task-detail-failed"),
        ("/keys/", "keys"),
        ("/webhooks/", "webhooks"),
        ("/billing/", "billing"),
        ("/team/", "team"),
        ("/orgs/new/", "organization-new"),
        (f"/tasks/{waiting.pk}/input/", "task-input"),
        (f"/invitations/{token}/", "invitation"),
        ("/accounts/email/", "account-email"),
        ("/accounts/2fa/", "account-security"),
    ]
    for path, name in pages:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, path
        fits(page, f"i16-{name}", problems)
        accessible(page, name, problems)
    assert not problems, "\n".join(problems)


def test_keys_page_fits_redirects_after_create_and_shows_how_to_call_us(
    live_server: Any, new_page: Callable[[], Any], settings: Any
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    settings.PUBLIC_BASE_URL = base
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/keys/")
    page.fill("#id_name", "A key with a rather long name for the table")
    page.check("#id_can_read_billing")
    page.fill("#id_allowed_ips", "203.0.113.7, 198.51.100.0/24, 192.0.2.0/24")
    page.get_by_role("button", name="Create key").click()
    # Post/redirect/get: the address is the list's, a reload is a plain GET.
    page.wait_for_url(f"{base}/keys/")
    secret = page.get_by_test_id("new-key").inner_text().strip()
    key = ApiKey.objects.get(organization=tenant.organization)
    # The examples: three base URLs, a curl per dialect, each with the new key.
    expect(page.get_by_test_id("base-url")).to_have_text(
        [f"{base}/api/v1/", f"{base}/mj/", f"{base}/midjourney/v1/"]
    )
    curls = page.get_by_test_id("curl").all_inner_texts()
    assert len(curls) == 3 and all(secret in text for text in curls)
    assert "/mj/submit/imagine" in curls[1] and "/midjourney/v1/imagine" in curls[2]
    # The status and the Revoke button are on screen at 1280 px, not cut off.
    row = page.locator(f"tr[data-key-id='{key.pk}']")
    expect(row.get_by_text("Active")).to_be_in_viewport()
    revoke = row.get_by_role("button", name=re.compile("^Revoke"))
    box = revoke.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth")
    fits(page, "i16-keys-created")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.reload()
    assert requests[0] == f"GET {base}/keys/"
    assert secret not in page.content()
    assert ApiKey.objects.filter(organization=tenant.organization).count() == 1


def test_webhook_delivery_log_reads_right(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    rows = seed_deliveries(tenant.organization, tenant.imagine)
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/webhooks/")

    def row(name: str) -> Any:
        return page.locator(f"tr[data-delivery-id='{rows[name].pk}']")  # type: ignore[attr-defined]

    # A failed attempt of a message delivered since says so; "HTTP 500" once.
    expect(row("delivered_first").get_by_test_id("delivery-state")).to_have_text(
        "Failed (delivered later)"
    )
    assert row("delivered_first").inner_text().count("HTTP 500") == 1
    expect(row("failed_once").get_by_test_id("delivery-state")).to_have_text(
        "Failed (retry scheduled)"
    )
    # The pending attempt: when it is due, and no Resend.
    expect(row("pending").get_by_test_id("next-attempt")).to_contain_text("Next attempt")
    expect(row("pending").get_by_role("button", name=re.compile("Resend"))).to_have_count(0)
    expect(row("delivered_first").get_by_role("button", name=re.compile("Resend"))).to_have_count(1)
    # URLs on one line (cut with an ellipsis, the whole URL in the title), not broken mid-word.
    url = row("delivered_first").locator(".url-cell")
    assert url.evaluate("el => getComputedStyle(el).whiteSpace") == "nowrap"
    line = url.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 20")
    assert url.bounding_box()["height"] <= line * 1.5
    # Request and response on demand.
    detail = page.get_by_test_id("delivery-detail").first
    detail.locator("summary").click()
    expect(detail).to_contain_text('"status": "SUCCESS"')
    expect(detail).to_contain_text("webhook-id:")
    fits(page, "i16-webhooks-log")


def test_ledger_shows_one_line_per_task(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/billing/")
    lines = page.get_by_test_id("ledger-line")
    # top-up, the imagine, the upscale and the failed task: four lines for ten entries.
    expect(lines).to_have_count(4)
    imagine = lines.filter(has_text=f"#{tenant.imagine.pk}")
    expect(imagine.locator("strong")).to_have_text("Imagine · fast")
    expect(imagine.get_by_test_id("ledger-amount")).to_have_text(f"−{PRICE:,}")
    expect(imagine).to_contain_text("charged")
    failed = lines.filter(has_text=f"#{tenant.failed.pk}")
    expect(failed.get_by_test_id("ledger-amount")).to_have_text("0")
    expect(failed).to_contain_text("not charged")
    details = imagine.locator("details")
    expect(details.locator("li").first).to_be_hidden()  # shown when asked for
    details.locator("summary").click()
    expect(details.locator("li")).to_have_text(
        [re.compile("^Hold 14,000"), re.compile("^Capture 14,000")]
    )
    fits(page, "i16-billing-ledger")


def test_a_failed_task_shows_what_was_paid_and_what_it_would_have_cost(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email, then="/create/")
    paid = "0 tokens paid (would have been 14,000)"
    card = page.locator(f"#task-{tenant.failed.pk}")
    expect(card.get_by_test_id("task-cost")).to_have_text(paid)
    expect(page.locator(f"#task-{tenant.imagine.pk}").get_by_test_id("task-cost")).to_have_text(
        "14,000 tokens"
    )
    page.goto(f"{base}/tasks/{tenant.failed.pk}/")
    expect(page.locator("dl.props").get_by_test_id("task-cost")).to_have_text(paid)
    page.goto(f"{base}/tasks/")
    row = page.locator("tr", has_text="a storm over the sea")
    expect(row.get_by_test_id("task-cost")).to_have_text(paid)
    assert "14,000 tokens" not in row.inner_text()


def test_local_mailbox_lists_the_verification_mail_with_the_product_name(
    live_server: Any, new_page: Callable[[], Any], settings: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    # Mailed links lead to PUBLIC_BASE_URL, whatever host the sign-up came to.
    settings.PUBLIC_BASE_URL = base
    settings.EMAIL_BACKEND = "apps.dashboard.mailbox.MailboxBackend"
    settings.MAILBOX_DIR = str(tmp_path / "mailbox")
    page = new_page()
    page.goto(f"{base}/accounts/signup/")
    page.fill("input[name=email]", "newcomer@example.com")
    page.fill("input[name=password1]", "correct-horse-battery-42")
    page.fill("input[name=password2]", "correct-horse-battery-42")
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url(re.compile(r"/accounts/confirm-email/"))
    # Where a newcomer looks: the page that says "we sent you a mail" points to the mailbox.
    page.get_by_test_id("mailbox-hint").get_by_role("link", name="local mailbox").click()
    mail = page.get_by_test_id("mail").first
    expect(mail).to_contain_text("newcomer@example.com")
    mail.locator("summary").click()
    expect(mail).to_contain_text("Hello from mjgate!")
    assert "Hello from 127.0.0.1" not in mail.inner_text()
    fits(page, "i16-mailbox-with-mail")
    mail.get_by_test_id("mail-link").filter(has_text="confirm-email").click()
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"{base}/")


def test_every_page_has_a_favicon(live_server: Any, new_page: Callable[[], Any]) -> None:
    base = live_server.url
    page = new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(f"{base}/accounts/login/")
    href = page.locator("link[rel=icon]").get_attribute("href")
    assert href
    icon = page.request.get(f"{base}{href}")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    legacy = page.request.get(f"{base}/favicon.ico")
    assert legacy.status == 200 and legacy.headers["content-type"].startswith("image/svg+xml")
    assert not missing


def test_feed_empty_state_shows_until_the_first_card(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    membership = MembershipFactory()
    page = new_page()
    sign_in(page, base, membership.user.email, then="/create/")
    expect(page.get_by_test_id("feed-empty")).to_be_visible()
    fits(page, "i16-create-empty")
    TaskFactory(organization=membership.organization, succeeded=True, is_test=True)
    page.reload()
    expect(page.locator("#task-feed article.task-card")).to_have_count(1)
    expect(page.get_by_test_id("feed-empty")).to_be_hidden()
    assert Task.objects.filter(status=Status.SUCCESS).count() == 1


def test_plans_show_their_price_and_change_through_stripe(
    live_server: Any, new_page: Callable[[], Any], settings: Any
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    fake = FakeStripe(prices={"price_vip": (9_900, "cny", "month")}).start()
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    # The fake's Checkout and portal are on their own origins: the forms' redirects go there.
    policy = settings.CONTENT_SECURITY_POLICY
    settings.CONTENT_SECURITY_POLICY = {
        **policy,
        "form-action": [
            *policy["form-action"],
            "https://checkout.stripe.test",
            "https://billing.stripe.test",
        ],
    }
    cache.clear()
    try:
        MembershipTier.objects.filter(code="VIP").update(stripe_price_id="price_vip")
        tenant = seed_tenant()
        page = new_page()
        for host in ("https://checkout.stripe.test/**", "https://billing.stripe.test/**"):
            page.route(
                host,
                lambda route: route.fulfill(
                    status=200,
                    content_type="text/html",
                    body="<title>Stripe</title><h1>Stripe</h1>",
                ),
            )
        sign_in(page, base, tenant.user.email, then="/billing/")
        vip = page.locator("[data-tier=VIP]")
        expect(vip.get_by_test_id("tier-price")).to_have_text("99.00 CNY / month")
        expect(page.locator("[data-tier=FREE]").get_by_test_id("tier-price")).to_have_text("Free")
        fits(page, "i16-billing-plans")
        vip.get_by_role("button", name="Upgrade to VIP").click()
        page.wait_for_url(re.compile(r"^https://checkout\.stripe\.test/"))
        assert fake.requests[-1].form["line_items[0][price]"] == "price_vip"
        # Subscribed: the plan changes (up, down, cancel) in Stripe's customer portal.
        organization = tenant.organization
        organization.stripe_customer_id = "cus_test_1"
        organization.tier = MembershipTier.objects.get(code="VIP")
        organization.save(update_fields=["stripe_customer_id", "tier"])
        page.goto(f"{base}/billing/")
        expect(page.get_by_role("button", name=re.compile("^Upgrade to"))).to_have_count(0)
        page.locator("[data-tier=FREE]").get_by_role(
            "button", name="Switch to Free in Stripe"
        ).click()
        page.wait_for_url(re.compile(r"^https://billing\.stripe\.test/p/session/"))
        assert fake.requests[-1].form["customer"] == "cus_test_1"
    finally:
        fake.stop()
        cache.clear()


def test_api_docs_show_all_three_dialects_and_lead_back(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page = new_page()
    sign_in(page, base, tenant.user.email)
    page.get_by_role("link", name="API docs").first.click()
    page.wait_for_url(f"{base}/api/docs/")
    for tag in ("v1", "midjourney-proxy", "TTAPI"):
        expect(page.locator(f"#operations-tag-{tag}")).to_be_visible()
    expect(page.get_by_text("/mj/submit/imagine", exact=True)).to_be_visible()
    expect(page.get_by_text("/midjourney/v1/imagine", exact=True)).to_be_visible()
    fits(page, "i16-api-docs")
    back = page.get_by_role("link", name="Back to the dashboard")
    expect(back).to_have_attribute("href", "/")
    expect(page.get_by_role("link", name=re.compile("^Your API keys"))).to_have_attribute(
        "href", "/keys/"
    )
