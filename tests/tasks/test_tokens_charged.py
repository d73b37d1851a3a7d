"""What a finished task shows as charged is what the ledger captured at success, whatever
happens to its upstream account later: the platform fee of a task its organization's own
account ran stays the fee after that account is deleted (TTAPI ``quota``, the dashboard)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps as django_apps
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier, Organization, User
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.own_services import own_account_delete
from apps.tasks.enums import Action, ErrorCode, Pool, Status
from apps.tasks.lifecycle import task_fail
from apps.tasks.models import Protocol, Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.dashboard.helpers import login
from tests.factories import UpstreamAccountFactory

from .helpers import run_to_completion

pytestmark = pytest.mark.django_db

PRICE = 14000  # IMAGINE FAST, held for an own-then-shared task
FEE = 2800  # its platform fee, captured when the organization's own account ran it


@pytest.fixture
def premium(organization: Organization, fund: Any) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 1_000_000)
    return organization


def _submit(organization: Organization, key: Any, prompt: str = "a heron") -> Task:
    caller = Caller(organization=organization, api_key=key.api_key, protocol=Protocol.TTAPI)
    return task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task


def _quota(key: Any, task: Task) -> str:
    client = APIClient()
    client.credentials(HTTP_TT_API_KEY=key.plaintext)
    response = client.get("/midjourney/v1/fetch", {"jobId": task.pk})
    assert response.status_code == 200, response.content
    return str(response.json()["data"]["quota"])


def _detail(user: User, task: Task) -> str:
    response = login(user).get(f"/tasks/{task.pk}/")
    assert response.status_code == 200
    return str(response.content.decode())


def test_an_own_accounts_fee_is_still_shown_after_the_account_is_deleted(
    premium: Organization, owner: User, make_key: Any
) -> None:
    key = make_key(premium, pool=Pool.OWN_THEN_SHARED)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccountFactory(name="shared-1")
    task = _submit(premium, key)
    dispatch_pending()
    done = run_to_completion(task.pk)
    assert (done.status, done.upstream_account_id) == (Status.SUCCESS, mine.pk)
    capture = LedgerEntry.objects.get(task=task, kind=EntryKind.CAPTURE)
    assert capture.delta_held == -FEE
    assert done.tokens_captured == FEE

    own_account_delete(organization=premium, account_id=mine.pk)

    after = Task.objects.get(pk=task.pk)
    assert after.upstream_account_id is None
    assert after.tokens_charged == FEE
    assert _quota(key, after) == str(FEE)
    page = _detail(owner, after)
    assert "2,800 tokens" in page and "14,000 tokens" not in page
    assert balance_get(organization=premium).available == 1_000_000 - FEE


def test_a_shared_pool_task_shows_its_price(
    premium: Organization, owner: User, make_key: Any
) -> None:
    key = make_key(premium)
    shared = UpstreamAccountFactory(name="shared-1")
    task = _submit(premium, key)
    dispatch_pending()
    done = run_to_completion(task.pk)
    assert (done.status, done.upstream_account_id) == (Status.SUCCESS, shared.pk)
    assert (done.tokens_captured, done.tokens_charged) == (PRICE, PRICE)
    shared.delete()
    after = Task.objects.get(pk=task.pk)
    assert after.tokens_charged == PRICE
    assert _quota(key, after) == str(PRICE)
    assert "14,000 tokens" in _detail(owner, after)


def test_failed_cancelled_and_test_tasks_show_nothing_charged(
    premium: Organization, owner: User, make_key: Any
) -> None:
    key = make_key(premium)
    UpstreamAccountFactory(name="shared-1")
    failed = _submit(premium, key, "a fox")
    cancelled = _submit(premium, key, "an owl")
    dispatch_pending()
    assert task_fail(task_id=failed.pk, reason="boom", error_code=ErrorCode.UPSTREAM_ERROR)
    task_cancel(organization=premium, task_id=cancelled.pk)
    test_key = make_key(premium, is_test=True)
    UpstreamAccountFactory(sandbox_pool=True)  # the test keys' pool
    test = run_to_completion(_submit(premium, test_key, "a cow").pk)
    assert test.status == Status.SUCCESS and test.is_test
    for task, status, used in (
        (failed, Status.FAILURE, key),
        (cancelled, Status.CANCEL, key),
        (test, Status.SUCCESS, test_key),
    ):
        row = Task.objects.get(pk=task.pk)
        assert row.status == status
        assert row.tokens_charged == 0
        assert _quota(used, row) == "0"
        page = _detail(owner, row)
        assert "14,000 tokens</" not in page


def test_a_task_that_succeeded_before_the_capture_was_recorded_is_read_as_before(
    premium: Organization, make_key: Any
) -> None:
    key = make_key(premium, pool=Pool.OWN_THEN_SHARED)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccountFactory(name="shared-1")
    task = _submit(premium, key)
    dispatch_pending()
    run_to_completion(task.pk)
    Task.objects.filter(pk=task.pk).update(tokens_captured=None)  # as before migration 0021
    legacy = Task.objects.get(pk=task.pk)
    assert legacy.upstream_account_id == mine.pk
    assert legacy.tokens_charged == FEE
    Task.objects.filter(pk=task.pk).update(upstream_account=None)
    assert Task.objects.get(pk=task.pk).tokens_charged == PRICE  # nothing else to go by


def test_a_new_task_is_accepted_with_nothing_captured(premium: Organization, make_key: Any) -> None:
    task = _submit(premium, make_key(premium))
    assert Task.objects.get(pk=task.pk).tokens_captured is None


def test_migration_0022_records_what_the_ledger_captured_for_older_successes(
    premium: Organization, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backfill reads each older success's capture entry: the fee for the own account's
    task (whose account is gone since), the price for the shared pool's, 0 for a test task;
    tasks not succeeded and values already recorded are left alone; batches walk the table."""
    backfill = importlib.import_module("apps.tasks.migrations.0022_backfill_tokens_captured")
    monkeypatch.setattr(backfill, "BATCH", 2)
    own_key = make_key(premium, pool=Pool.OWN_THEN_SHARED)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccountFactory(name="shared-1")
    own = _submit(premium, own_key, "an own heron")
    dispatch_pending()
    run_to_completion(own.pk)
    own_account_delete(organization=premium, account_id=mine.pk)
    shared = [_submit(premium, make_key(premium), f"a shared heron {n}") for n in range(3)]
    dispatch_pending()
    for task in shared:
        run_to_completion(task.pk)
    test_key = make_key(premium, is_test=True)
    UpstreamAccountFactory(sandbox_pool=True)
    test = run_to_completion(_submit(premium, test_key, "a test heron").pk)
    waiting = _submit(premium, make_key(premium), "a queued heron")
    older = [own.pk, test.pk, *(task.pk for task in shared)]
    Task.objects.filter(pk__in=older).update(tokens_captured=None)  # as before 0021
    Task.objects.filter(pk=shared[0].pk).update(tokens_captured=7)  # recorded: left alone

    backfill.backfill(django_apps, None)

    after = dict(
        Task.objects.filter(pk__in=[*older, waiting.pk]).values_list("pk", "tokens_captured")
    )
    assert after == {
        own.pk: FEE,
        test.pk: 0,
        shared[0].pk: 7,
        shared[1].pk: PRICE,
        shared[2].pk: PRICE,
        waiting.pk: None,
    }
    assert Task.objects.get(pk=own.pk).tokens_charged == FEE
    backfill.backfill(django_apps, None)  # again: nothing changes
    assert dict(Task.objects.filter(pk__in=after).values_list("pk", "tokens_captured")) == after
