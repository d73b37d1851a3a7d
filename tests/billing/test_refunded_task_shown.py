"""A task the operator refunded (``ledger_refund_task``) is shown as costing what the ledger says
it cost in the end: ``Task.tokens_charged`` (TTAPI's ``quota``, the dashboard's task cost) and
the spend figures (the dashboard's spend chart, the operator's tokens per day and top tenants)
take the refund off."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Organization
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_refund_task
from apps.billing.models import LedgerEntry
from apps.billing.selectors import balance_get
from apps.dashboard.presenters import task_cost
from apps.dashboard.selectors import spend_by_day
from apps.operator.selectors import stats_tokens_per_day, stats_top_tenants
from apps.tasks.enums import Action, Status
from apps.tasks.models import Protocol, Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.dashboard.helpers import login
from tests.factories import OrganizationFactory, UserFactory
from tests.tasks.helpers import run_to_completion, sandbox_account

from .helpers import new_task

pytestmark = pytest.mark.django_db

FUNDS = 1_000_000
PRICE = 14_000  # IMAGINE FAST


def test_a_refunded_task_reports_no_charge_on_ttapi_and_the_dashboard(
    organization: Organization, owner: Any, make_key: Any, fund: Any
) -> None:
    fund(organization, FUNDS)
    key = make_key(organization)
    caller = Caller(organization=organization, api_key=key.api_key, protocol=Protocol.TTAPI)
    sandbox_account()
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a heron").task
    done = run_to_completion(task.pk)
    assert (done.status, done.tokens_charged) == (Status.SUCCESS, PRICE)

    ledger_refund_task(task=done, operator=UserFactory(is_staff=True), reason="blurry")
    assert done.tokens_charged == 0  # the instance the refund was given
    assert balance_get(organization=organization).available == FUNDS
    after = Task.objects.get(pk=done.pk)
    assert (after.tokens_captured, after.tokens_refunded, after.tokens_charged) == (PRICE, PRICE, 0)
    cost = task_cost(after)
    assert (cost.paid, cost.refunded, cost.free) == (0, PRICE, False)

    client = APIClient()
    client.credentials(HTTP_TT_API_KEY=key.plaintext)
    response = client.get("/midjourney/v1/fetch", {"jobId": after.pk})
    assert response.status_code == 200, response.content
    assert response.json()["data"]["quota"] == "0"
    page = login(owner).get(f"/tasks/{after.pk}/").content.decode()
    assert '<span data-testid="task-cost">0 tokens</span>' in page


def test_a_second_refund_press_leaves_the_task_as_refunded_once(
    organization: Organization, fund: Any
) -> None:
    fund(organization, FUNDS)
    task = new_task(organization, status=Status.SUCCESS)
    ledger_hold(task=task, amount=PRICE)
    ledger_capture(task=task)
    Task.objects.filter(pk=task.pk).update(tokens_captured=PRICE)
    for reason in ("blurry", "pressed twice"):
        ledger_refund_task(task=Task.objects.get(pk=task.pk), operator=None, reason=reason)
    after = Task.objects.get(pk=task.pk)
    assert (after.tokens_refunded, after.tokens_charged) == (PRICE, 0)


def _charged(organization: Organization, amount: int, *, refund: bool = False) -> Task:
    task = new_task(organization, status=Status.SUCCESS)
    ledger_hold(task=task, amount=amount)
    ledger_capture(task=task)
    if refund:
        ledger_refund_task(task=task, operator=None, reason="blurry")
    return task


def test_the_dashboards_spend_chart_takes_refunded_tasks_off(
    organization: Organization, fund: Any
) -> None:
    fund(organization, FUNDS)
    _charged(organization, PRICE, refund=True)
    _charged(organization, 3_500)
    days = spend_by_day(organization=organization, days=2, today=timezone.localdate())
    assert sum(d.tokens for d in days) == 3_500


def test_the_operators_spend_stats_take_refunded_tasks_off(fund: Any) -> None:
    acme = OrganizationFactory(name="Acme")
    other = OrganizationFactory(name="Other")
    fund(acme, FUNDS)
    fund(other, FUNDS)
    # Acme spent more, but had most of it refunded: Other is the top spender.
    _charged(acme, 20_000, refund=True)
    _charged(acme, 3_500)
    _charged(other, 14_000)
    now = datetime.now(tz=UTC)
    days = stats_tokens_per_day(now=now, days=2)
    assert (sum(d.tokens for d in days), sum(d.tasks for d in days)) == (17_500, 2)
    top = stats_top_tenants(now=now, days=2, limit=1)
    assert [(t.name, t.tokens, t.tasks) for t in top] == [("Other", 14_000, 1)]
    top = stats_top_tenants(now=now, days=2)
    assert [(t.name, t.tokens, t.tasks) for t in top] == [("Other", 14_000, 1), ("Acme", 3_500, 1)]
    # The ledger itself is untouched: the capture is still there, the refund beside it.
    assert LedgerEntry.objects.filter(organization=acme, kind="capture").count() == 2


def test_tasks_refunded_before_the_column_existed_are_backfilled(
    organization: Organization, fund: Any
) -> None:
    """Migration ``tasks.0024`` copies each earlier task refund onto its task, once."""
    backfill = import_module("apps.tasks.migrations.0024_task_tokens_refunded").backfill
    fund(organization, FUNDS)
    refunded = _charged(organization, PRICE, refund=True)
    charged = _charged(organization, 3_500)
    Task.objects.filter(pk=refunded.pk).update(tokens_refunded=None)
    for _ in range(2):
        backfill(django_apps, None)
    rows = dict(
        Task.objects.filter(pk__in=[refunded.pk, charged.pk]).values_list("pk", "tokens_refunded")
    )
    assert rows == {refunded.pk: PRICE, charged.pk: None}
