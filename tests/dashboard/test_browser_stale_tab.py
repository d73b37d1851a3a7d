"""Two tabs of one browser (one session): a page of Acme left open while the other tab
switches to Bravo. Its plain form and its htmx form are refused, nothing is made in either
organization, and the page says why and how to go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.accounts.models import Role
from apps.api_keys.models import ApiKey
from apps.tasks.models import Task
from tests.factories import MembershipFactory, OrganizationFactory

from .browser import accessible, fits, sign_in
from .seed import seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

STALE = (
    "This page was for organization {page}, but you have since switched to {now} in another tab."
)


def test_a_tab_left_on_the_previous_organization_is_refused(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    acme = tenant.organization
    first = new_page()
    sign_in(first, base, tenant.user.email, then="/keys/")  # the session starts in Acme
    bravo = OrganizationFactory(name="Bravo Ltd")
    MembershipFactory(user=tenant.user, organization=bravo, role=Role.OWNER)
    # More tabs: the same cookies, so the same session.
    create = first.context.new_page()
    create.goto(f"{base}/create/")
    switcher = first.context.new_page()
    switcher.goto(f"{base}/")
    keys_before, tasks_before = ApiKey.objects.count(), Task.objects.count()

    switcher.select_option("#org-select", str(bravo.pk))
    expect(switcher.locator("[role=status]")).to_contain_text("Switched to Bravo Ltd.")

    # The keys tab's plain form: a whole page that says why, and the ways on.
    first.fill("input[name=name]", "meant for acme")
    first.get_by_role("button", name="Create key").click()
    refusal = first.get_by_test_id("stale-page")
    expect(refusal).to_contain_text(STALE.format(page=acme.name, now="Bravo Ltd"))
    expect(refusal.get_by_role("button", name=f"Switch back to {acme.name}")).to_be_visible()
    expect(refusal.get_by_role("link", name="Continue in Bravo Ltd")).to_be_visible()
    accessible(first, "stale-page")
    fits(first, "stale-page")
    assert ApiKey.objects.count() == keys_before

    # The Create tab's htmx form: a toast that stays until the page is reloaded.
    create.fill("textarea[name=prompt]", "a fox meant for acme")
    create.get_by_label("Test mode").check()
    create.get_by_role("button", name="Generate").click()
    toast = create.locator("#toasts [data-testid=stale-page]")
    expect(toast).to_contain_text(STALE.format(page=acme.name, now="Bravo Ltd"))
    create.wait_for_timeout(6_500)  # other error toasts go after 6 s
    expect(toast).to_be_visible()
    assert Task.objects.count() == tasks_before

    # Reloaded, the page is Bravo's and works.
    create.reload()
    create.fill("textarea[name=prompt]", "a fox for bravo")
    create.get_by_label("Test mode").check()
    create.get_by_role("button", name="Generate").click()
    expect(create.locator("#task-feed article.task-card").first).to_contain_text("a fox for bravo")
    assert Task.objects.filter(organization=bravo).count() == 1
    assert Task.objects.count() == tasks_before + 1
