"""Bring-your-own upstream accounts in a real browser: an owner adds an mjproxy account (the
secret never comes back to the page), sees its health, load and failure reason, edits,
disables and deletes it; a member has no such page; the fee table is shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from apps.accounts.models import MembershipTier, Role
from apps.engines.models import Health, UpstreamAccount
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.factories import MembershipFactory, UserFactory

from .browser import accessible, fits, sign_in
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SECRET = "browser-secret-3141592653"


def test_an_owner_manages_own_upstream_accounts(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    base = live_server.url
    tenant = seed_tenant()
    organization = tenant.organization
    organization.tier = MembershipTier.objects.get(code="VIP")  # two own accounts
    organization.save(update_fields=["tier"])
    page = new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, base, tenant.user.email)
    page.get_by_role("link", name="Upstream accounts").click()
    page.wait_for_url(f"{base}/upstream-accounts/")
    expect(page.get_by_text("No accounts of your own")).to_be_visible()
    # The fee table: a fifth of the price.
    expect(page.get_by_test_id("own-fees")).to_contain_text("2,800")

    form = page.get_by_test_id("own-account-form")
    form.get_by_label("Name").fill("my midjourney-proxy")
    form.get_by_label("Engine").select_option("mjproxy")
    form.get_by_label("Fast").check()
    form.get_by_label("Concurrency").fill("2")
    form.get_by_label("Upstream address (mjproxy)").fill("http://127.0.0.1:8080")
    form.get_by_label("mj-api-secret (mjproxy)").fill(SECRET)
    form.get_by_role("button", name="Add account").click()
    # A loopback address is customer input here: refused in place, nothing stored.
    expect(page.locator(".errorlist, .alert.error").first).to_be_visible()
    assert not UpstreamAccount.objects.filter(owner=organization).exists()
    assert SECRET not in page.content()

    form = page.get_by_test_id("own-account-form")
    form.get_by_label("Upstream address (mjproxy)").fill("https://mj.example.com")
    form.get_by_label("mj-api-secret (mjproxy)").fill(SECRET)
    form.get_by_role("button", name="Add account").click()
    expect(page.get_by_text("Upstream account my midjourney-proxy added.")).to_be_visible()
    account = UpstreamAccount.objects.get(owner=organization)
    assert (account.engine, account.modes, account.concurrency) == ("mjproxy", ["FAST"], 2)
    assert dict(account.secrets) == {"secret": SECRET}
    assert SECRET not in page.content()
    row = page.locator(f"tr[data-account-id='{account.pk}']")
    expect(row.get_by_test_id("account-load")).to_have_text("0 / 2 running")
    expect(row).to_contain_text("credentials stored")

    # Health, load and the reason for a failure, as the tenant sees them.
    UpstreamAccount.objects.filter(pk=account.pk).update(
        health=Health.NEEDS_VERIFICATION,
        health_reason="The upstream answered 401: check the mj-api-secret.",
        last_error="HTTP 401 Unauthorized",
    )
    Task.objects.create(
        organization=organization,
        action=Action.IMAGINE,
        status=Status.IN_PROGRESS,
        upstream_account=account,
    )
    page.reload()
    row = page.locator(f"tr[data-account-id='{account.pk}']")
    expect(row.get_by_test_id("account-health")).to_contain_text("Needs verification")
    expect(row.get_by_test_id("account-reason")).to_have_text(
        "The upstream answered 401: check the mj-api-secret."
    )
    expect(row.get_by_test_id("account-load")).to_have_text("1 / 2 running")
    expect(row).to_contain_text("HTTP 401 Unauthorized")
    fits(page, "byo-upstream-accounts")
    accessible(page, "upstream-accounts")

    # A busy account cannot be deleted; the reason is said.
    row.get_by_role("button", name="Delete my midjourney-proxy").click()
    expect(page.locator(".alert").filter(has_text="still runs 1 task")).to_be_visible()
    assert UpstreamAccount.objects.filter(pk=account.pk).exists()
    Task.objects.filter(upstream_account=account).update(status=Status.SUCCESS)

    # Edit: the stored secret is kept when the field is left empty, never shown.
    page.get_by_role("link", name="Edit my midjourney-proxy").click()
    edit = page.get_by_test_id("own-account-edit-form")
    expect(edit.get_by_label("mj-api-secret (mjproxy)")).to_have_value("")
    edit.get_by_label("Concurrency").fill("3")
    edit.get_by_label("Relax").check()
    edit.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Upstream account my midjourney-proxy saved.")).to_be_visible()
    account.refresh_from_db()
    assert (account.concurrency, account.modes) == (3, ["FAST", "RELAX"])
    assert dict(account.secrets) == {"secret": SECRET}

    # Disable, then delete.
    page.get_by_role("button", name="Disable my midjourney-proxy").click()
    expect(page.get_by_text("my midjourney-proxy is disabled.")).to_be_visible()
    account.refresh_from_db()
    assert not account.is_enabled
    page.get_by_role("button", name="Delete my midjourney-proxy").click()
    expect(page.get_by_text("Upstream account my midjourney-proxy removed.")).to_be_visible()
    assert not UpstreamAccount.objects.filter(pk=account.pk).exists()

    # A member neither sees the link nor reaches the page.
    member = UserFactory(email="member@example.com")  # signs in with the factory's password
    MembershipFactory(user=member, organization=organization, role=Role.MEMBER)
    other = new_page()
    sign_in(other, base, member.email)
    expect(other.get_by_role("link", name="Upstream accounts")).to_have_count(0)
    response = other.goto(f"{base}/upstream-accounts/")
    assert response is not None and response.status == 403
