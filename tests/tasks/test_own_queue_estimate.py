"""The wait of an own-only task follows its organization's own accounts, not the shared pool
(``selectors.task_queue_estimate`` and ``task_queue_estimates`` for ``Pool.OWN``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier, Organization
from apps.engines.models import Health, UpstreamAccount
from apps.tasks.enums import Action, Mode, Pool, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.selectors import pool_throughput_forget, task_queue_estimate, task_queue_estimates
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory, TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db


def _finished(account: UpstreamAccount, organization: Organization, count: int) -> None:
    """``count`` FAST tasks ``account`` ran for a minute each and finished a minute ago (in
    the throughput window)."""
    at = timezone.now() - timedelta(minutes=1)
    for _ in range(count):
        TaskFactory(
            organization=organization,
            status=Status.SUCCESS,
            mode=Mode.FAST,
            pool=Pool.OWN if account.owner_id else Pool.SHARED,
            engine="sandbox",
            upstream_account=account,
            submitted_at=at - timedelta(seconds=61),
            started_at=at - timedelta(seconds=60),
            finished_at=at,
        )


@pytest.fixture
def own_line(
    organization: Organization, fund: Callable[..., None], make_key: Callable[..., Any]
) -> tuple[UpstreamAccount, list[Task], Any]:
    """An organization with one own FAST account of 3 slots, all busy with its own tasks, and
    three own-only tasks queued behind them; beside it a large, busy shared pool (24 slots)
    that finished ten times as many tasks lately. Every job took a minute."""
    MembershipTier.objects.update(max_unfinished_tasks=100)
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)
    mine = UpstreamAccountFactory(name="mine", owner=organization, modes=[Mode.FAST])
    shared = [UpstreamAccountFactory(name=f"shared-{n}", concurrency=3) for n in range(8)]
    other = OrganizationFactory()
    _finished(mine, organization, 6)  # 6 in 10 minutes: too few to go by
    for account in shared[:3]:
        _finished(account, other, 20)  # 60 more in the pool of the mode
    key = make_key(organization, pool=Pool.OWN)
    caller = Caller(organization=organization, api_key=key.api_key)
    tasks = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"a fox {n}", mode=Mode.FAST).task
        for n in range(6)
    ]
    assert len(dispatch_pending().assigned) == 3
    assert Task.objects.filter(upstream_account=mine, status=Status.SUBMITTED).count() == 3
    queued = [Task.objects.get(pk=t.pk) for t in tasks[3:]]
    assert all(t.status == Status.NOT_START and t.pool == Pool.OWN for t in queued)
    pool_throughput_forget()
    return mine, queued, key


def _seconds(estimate: Any) -> float:
    assert estimate.expected_start is not None
    return (estimate.expected_start - timezone.now()).total_seconds()


def test_the_wait_follows_the_organizations_own_account(own_line):
    _, queued, _ = own_line
    first, third = (task_queue_estimate(task=t) for t in (queued[0], queued[2]))
    assert (first.ahead, first.position) == (0, 1)
    assert (third.ahead, third.position) == (2, 3)
    # Its own account's 3 slots open once a minute each: 20 s a slot, not the shared pool's
    # 24 slots' 2.5 s.
    assert 19 < _seconds(first) <= 20
    assert 59 < _seconds(third) <= 60


def test_a_free_own_slot_starts_it_now_however_busy_the_shared_pool(own_line):
    mine, queued, _ = own_line
    UpstreamAccount.objects.filter(pk=mine.pk).update(concurrency=4)
    estimate = task_queue_estimate(task=queued[0])
    assert (estimate.position, estimate.ahead, estimate.expected_start) == (0, 0, None)
    assert task_queue_estimate(task=queued[1]).position == 1


@pytest.mark.parametrize(
    "change",
    [
        {"is_enabled": False},
        {"health": Health.BANNED},
        {"health": Health.FAST_HOURS_EXHAUSTED},  # a FAST task it no longer takes
    ],
)
def test_without_a_usable_own_account_there_is_no_expected_start(own_line, change):
    mine, queued, _ = own_line
    UpstreamAccount.objects.filter(pk=mine.pk).update(**change)
    estimate = task_queue_estimate(task=queued[1])
    # The shared pool's accounts and throughput never serve it: no time can be promised.
    assert (estimate.position, estimate.ahead, estimate.expected_start) == (2, 1, None)


def test_a_page_reads_the_own_accounts_once(own_line):
    _, queued, _ = own_line
    one_by_one = {t.pk: task_queue_estimate(task=t) for t in queued}
    pool_throughput_forget()
    with CaptureQueriesContext(connection) as statements:
        together = task_queue_estimates(tasks=queued)
    assert {pk: (e.position, e.ahead) for pk, e in together.items()} == {
        pk: (e.position, e.ahead) for pk, e in one_by_one.items()
    }
    for pk, estimate in together.items():
        assert abs(_seconds(estimate) - _seconds(one_by_one[pk])) < 5
    # A place in the own line for each task, the own accounts once, the throughput once.
    assert len(statements) == len(queued) + 2


def test_every_dialect_shows_the_own_accounts_wait(own_line):
    """Fetch and the lists (a page's estimates read together) say the same in each dialect."""
    _, queued, key = own_line
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=key.plaintext)
    third = queued[2].pk
    now_ms = timezone.now().timestamp() * 1000
    fetched = client.get(f"/mj/task/{third}/fetch").json()["properties"]
    assert fetched["numberOfQueues"] == 2
    assert 55_000 < fetched["estimatedStartTime"] - now_ms <= 65_000
    listed = {t["id"]: t for t in client.get("/mj/task/list").json()}
    assert listed[third]["properties"]["numberOfQueues"] == 2
    assert (
        abs(listed[third]["properties"]["estimatedStartTime"] - fetched["estimatedStartTime"])
        < 5_000
    )
    job = client.get("/midjourney/v1/fetch", {"jobId": third}).json()["data"]
    assert job["queuePosition"] == 3
    assert 55_000 < job["estimatedStartTime"] - now_ms <= 65_000
    native = client.get(f"/api/v1/tasks/{third}").json()["properties"]
    assert native["queue_position"] == 3
    expected = datetime.fromisoformat(native["expected_start"])
    assert 55 < (expected - timezone.now()).total_seconds() <= 60
