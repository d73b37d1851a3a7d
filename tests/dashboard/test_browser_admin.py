"""Issue 16, the operator admin in a real browser: every page fits 1280 and 375 px, the home
page's Operations box, the task list and page, refund and retry links, formatted balances, and
the dashboard's look."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.operator.models import AuditEntry
from tests.factories import TaskFactory, UpstreamAccountFactory, UserFactory

from .browser import fits, sign_in
from .conftest import PHONE
from .seed import PRICE, seed_deliveries, seed_tenant

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _files_on_the_live_server(live_server: Any, settings: Any) -> None:
    # Result files are linked on PUBLIC_BASE_URL in the admin.
    settings.PUBLIC_BASE_URL = live_server.url


def operator_page(live_server: Any, new_page: Callable[[], Any]) -> tuple[Any, Any]:
    operator = UserFactory(email="ops@example.com", is_staff=True, is_superuser=True)
    page = new_page()
    sign_in(page, live_server.url, operator.email, then="/admin/")
    return page, operator


def test_every_admin_page_fits_both_widths(live_server: Any, new_page: Callable[[], Any]) -> None:
    base = live_server.url
    tenant = seed_tenant()
    seed_deliveries(tenant.organization, tenant.imagine)
    for n in range(3):
        UpstreamAccountFactory(name=f"sandbox-account-with-a-long-name-{n}")
    page, _ = operator_page(live_server, new_page)
    problems: list[str] = []
    pages = [
        ("/admin/", "home"),
        ("/admin/operator/stats/", "stats"),
        ("/admin/tasks/task/", "tasks"),
        (f"/admin/tasks/task/{tenant.imagine.pk}/change/", "task"),
        ("/admin/engines/upstreamaccount/", "upstream-accounts"),
        ("/admin/accounts/organization/", "organizations"),
        (f"/admin/accounts/organization/{tenant.organization.pk}/change/", "organization"),
        ("/admin/accounts/user/", "users"),
        ("/admin/billing/ledgerentry/", "ledger"),
        ("/admin/billing/price/", "prices"),
        ("/admin/api_keys/apikey/", "api-keys"),
        ("/admin/webhooks/webhookdelivery/", "webhook-deliveries"),
        ("/admin/operator/auditentry/", "audit-log"),
    ]
    for path, name in pages:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, path
        fits(page, f"i16-admin-{name}", problems)
        # A change list's table is not cut either: it fits its box at 1280 px.
        results = page.locator("#changelist .results")
        if results.count() and not results.evaluate("el => el.scrollWidth <= el.clientWidth + 1"):
            problems.append(f"the list on {name} is cut at 1280 px")
    assert not problems, "\n".join(problems)


def test_admin_home_operations_box_reads_on_one_line(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    page, _ = operator_page(live_server, new_page)
    for size in (None, PHONE):
        if size:
            page.set_viewport_size(size)
        link = page.locator("#operator-shortcuts").get_by_role("link", name="Live stats")
        box = link.bounding_box()
        line = link.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 18")
        assert box is not None and box["height"] <= line * 1.5, box  # one line, not a letter each
        assert box["width"] > 40


def test_task_list_and_page_for_operators(live_server: Any, new_page: Callable[[], Any]) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    page, _ = operator_page(live_server, new_page)
    page.goto(f"{base}/admin/tasks/task/")
    row = page.locator("#result_list tr", has_text=tenant.imagine.pk)
    expect(row.locator("td.field-prompt_short")).to_contain_text("a lighthouse on a cliff")
    expect(row.locator(".field-thumbnail img")).to_be_visible()
    page.goto(f"{base}/admin/tasks/task/{tenant.imagine.pk}/change/")
    chips = page.locator(".field-buttons_display .operator-chip")
    expect(chips.first).to_be_visible()
    assert chips.count() == len(tenant.imagine.buttons)
    assert "custom_id" not in page.locator(".field-buttons_display").inner_text()
    expect(page.locator(".field-created_at_s .readonly")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )


def test_an_operator_refunds_a_task_and_follows_a_retry(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    tenant = seed_tenant()
    retry = TaskFactory(
        organization=tenant.organization,
        prompt=tenant.failed.prompt,
        engine_state={"retry_of": tenant.failed.pk},
    )
    page, operator = operator_page(live_server, new_page)
    before = Balance.objects.get(organization=tenant.organization).available
    page.goto(f"{base}/admin/tasks/task/{tenant.imagine.pk}/change/")
    page.get_by_role("button", name="Refund this task").click()
    expect(page.locator(".messagelist")).to_contain_text(f"refunded {PRICE:,} tokens")
    refund = LedgerEntry.objects.get(kind=EntryKind.REFUND)
    assert (refund.task_id, refund.operator_id, refund.delta_available) == (
        tenant.imagine.pk,
        operator.pk,
        PRICE,
    )
    assert Balance.objects.get(organization=tenant.organization).available == before + PRICE
    audit = AuditEntry.objects.get(action="task.refund")
    assert (audit.actor_id, audit.object_id) == (operator.pk, tenant.imagine.pk)
    # The organization's balance, formatted.
    page.goto(f"{base}/admin/accounts/organization/")
    expect(page.locator("#result_list")).to_contain_text(f"{before + PRICE:,}")
    # A retried task and its original link to each other.
    page.goto(f"{base}/admin/tasks/task/{tenant.failed.pk}/change/")
    page.locator(".field-retry_links").get_by_role(
        "link", name=f"Retried as task {retry.pk}"
    ).click()
    expect(page.locator(".field-retry_links")).to_contain_text(f"Retry of task {tenant.failed.pk}")


def test_the_admin_looks_like_the_dashboard(live_server: Any, new_page: Callable[[], Any]) -> None:
    base = live_server.url
    page, _ = operator_page(live_server, new_page)
    header = page.evaluate(
        "() => getComputedStyle(document.getElementById('header')).backgroundColor"
    )
    button = page.evaluate("() => getComputedStyle(document.body).getPropertyValue('--button-bg')")
    font = page.evaluate("() => getComputedStyle(document.body).fontFamily")
    page.goto(f"{base}/")
    side = page.evaluate(
        "() => getComputedStyle(document.querySelector('.sidebar')).backgroundColor"
    )
    primary = page.evaluate(
        "() => getComputedStyle(document.documentElement).getPropertyValue('--primary')"
    )
    dash_font = page.evaluate("() => getComputedStyle(document.documentElement).fontFamily")
    assert header == side
    assert button.strip() in (primary.strip(), "var(--mj-violet)") or "#6d28d9" in button
    assert font.split(",")[0] == dash_font.split(",")[0]
