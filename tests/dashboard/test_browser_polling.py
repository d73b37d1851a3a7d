"""Live progress in a real browser: a card stops polling when its task is out of view, and the
Create page runs free test-mode tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from apps.accounts.models import Role
from apps.tasks.enums import Status
from apps.tasks.models import Task
from tests.billing.helpers import new_task
from tests.factories import MembershipFactory, OrganizationFactory

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def sign_in(page: Any, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", "pass-1234-word")
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"{base}/")


def test_a_card_stops_polling_when_its_organization_is_switched_in_another_tab(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    membership = MembershipFactory(role=Role.OWNER)
    other = OrganizationFactory(name="Second org")
    MembershipFactory(user=membership.user, organization=other, role=Role.OWNER)
    task = new_task(membership.organization, status=Status.IN_PROGRESS, progress=30, prompt="a fox")
    page = new_page()
    sign_in(page, base, membership.user.email)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/card/" in r.url else None)
    page.goto(f"{base}/create/")
    card = page.locator(f"#task-{task.pk}")
    expect(card.get_by_test_id("task-progress")).to_have_text("30%")
    Task.objects.filter(pk=task.pk).update(progress=60)
    expect(card.get_by_test_id("task-progress")).to_have_text("60%")  # live, no reload

    # Another tab of the same session switches the organization.
    tab = page.context.new_page()
    tab.goto(f"{base}/")
    tab.select_option("#org-select", label="Second org")
    tab.wait_for_url(re.compile(r"/$"))
    expect(page.get_by_text("This task is not in the current organization.")).to_be_visible()
    settled = len(polls)
    time.sleep(3)  # three polling intervals
    assert len(polls) == settled  # htmx stopped polling (286)
    expect(page.locator("#toasts .alert")).to_have_count(0)


def test_test_mode_runs_a_free_task_from_the_create_page(
    live_server: Any, new_page: Callable[[], Any]
) -> None:
    from playwright.sync_api import expect

    base = live_server.url
    membership = MembershipFactory(role=Role.OWNER)  # no tokens at all
    page = new_page()
    sign_in(page, base, membership.user.email)
    page.goto(f"{base}/create/")
    page.fill("#id_prompt", "a quick sketch of a fox")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#create-feedback")).to_contain_text("Insufficient balance")
    page.get_by_label("Test mode").check()
    page.get_by_role("button", name="Generate").click()
    card = page.locator("#task-feed article.task-card").first
    expect(card.locator(".badge.warn")).to_have_text("Test")
    expect(page.locator("#create-feedback")).to_be_empty()
    task = Task.objects.get(organization=membership.organization)
    assert (task.is_test, task.price, task.protocol) == (True, 0, "dashboard")
