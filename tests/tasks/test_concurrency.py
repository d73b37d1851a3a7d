"""The tier limit and the dispatcher under real concurrency, on PostgreSQL with real threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count

from apps.accounts.models import MembershipTier, Organization
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.core.errors import ConcurrencyLimitReached
from apps.engines.models import SandboxJob
from apps.tasks.enums import TERMINAL_STATUSES, Action, Status
from apps.tasks.lifecycle import ACTIVE_STATUSES, task_finish, task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory
from tests.integration_support import WAIT_TIMEOUT

from .helpers import sandbox_account

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

#: PostgreSQL allows 100 connections, shared with whatever else runs on the machine: all
#: threads start together, at most this many hold a connection at once.
MAX_CONNECTIONS = 30


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[tuple[str, Any]]:
    """Run ``work(i)`` in ``count`` threads released at once; each closes its connection."""
    barrier = threading.Barrier(count)
    gate = threading.BoundedSemaphore(MAX_CONNECTIONS)
    results: list[tuple[str, Any]] = [("missing", None)] * count

    def run(index: int) -> None:
        barrier.wait()
        with gate:
            try:
                results[index] = ("ok", work(index))
            except Exception as exc:
                results[index] = ("error", exc)
            finally:
                connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _set_tier(organization: Organization, code: str) -> None:
    organization.tier = MembershipTier.objects.get(code=code)
    organization.save(update_fields=["tier"])


@pytest.mark.parametrize(("tier", "limit"), [("FREE", 3), ("VIP", 20)])
def test_simultaneous_submits_accept_exactly_the_tier_limit(
    tier, limit, organization, live_key, fund
):
    _set_tier(organization, tier)
    fund(organization, 10_000_000)
    caller = Caller(organization=organization, api_key=live_key.api_key)

    results = run_concurrently(
        200,
        lambda i: task_submit(caller=caller, action=Action.IMAGINE, prompt=f"a tree number {i}"),
    )

    accepted = [value for kind, value in results if kind == "ok"]
    rejected = [value for kind, value in results if kind == "error"]
    assert len(accepted) == limit
    assert len(rejected) == 200 - limit
    assert all(type(error) is ConcurrencyLimitReached for error in rejected), {
        type(error).__name__ for error in rejected
    }
    assert rejected[0].details == {"limit": limit, "unfinished": limit, "tier": tier}
    # Nothing beyond the accepted ones exists: no task rows, no holds, no other entries.
    assert Task.objects.filter(organization=organization).count() == limit
    assert sorted(Task.objects.values_list("pk", flat=True)) == sorted(o.task.pk for o in accepted)
    holds = LedgerEntry.objects.filter(organization=organization, kind=EntryKind.HOLD)
    assert holds.count() == limit
    assert set(holds.values_list("task_id", flat=True)) == {o.task.pk for o in accepted}
    assert LedgerEntry.objects.filter(organization=organization).count() == limit + 1  # + top-up
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (10_000_000 - limit * 14000, limit * 14000)


def test_dispatchers_never_overfill_an_account_and_serve_tenants_fairly(make_key, fund):
    big = OrganizationFactory(name="Big")
    _set_tier(big, "PREMIUM")
    middle = OrganizationFactory(name="Middle")
    _set_tier(middle, "VIP")
    single = OrganizationFactory(name="Single")
    for organization in (big, middle, single):
        fund(organization, 1_000_000)

    def submit(organization: Organization, count: int) -> list[str]:
        caller = Caller(organization=organization, api_key=make_key(organization).api_key)
        return [
            task_submit(
                caller=caller, action=Action.SHORTEN, prompt=f"a long winding road {n}"
            ).task.pk
            for n in range(count)
        ]

    # The big tenant's backlog is the oldest; the single task arrives last of all.
    big_ids = submit(big, 50)
    middle_ids = submit(middle, 9)
    (single_id,) = submit(single, 1)
    all_ids = [*big_ids, *middle_ids, single_id]
    assert Task.objects.filter(status=Status.NOT_START).count() == 60
    accounts = [sandbox_account(f"pool-{n}", modes="FAST", concurrency=3) for n in range(3)]

    # First round: nine free slots, shared round-robin between the tenants.
    first = dispatch_pending().assigned
    assert len(first) == 9
    assert single_id in first
    by_tenant = Counter(
        Task.objects.filter(pk__in=first).values_list("organization__name", flat=True)
    )
    assert by_tenant == {"Big": 4, "Middle": 4, "Single": 1}
    per_account = Counter(
        Task.objects.filter(status=Status.SUBMITTED).values_list("upstream_account", flat=True)
    )
    assert per_account == {account.pk: 3 for account in accounts}

    # Then several dispatchers race while workers finish tasks, and a sampler watches.
    stop = threading.Event()
    samples: list[dict[int, int]] = []

    def sampler() -> None:
        try:
            while not stop.is_set():
                counts = dict(  # slot holders (a finished job's slot is free at once)
                    Task.objects.filter(status__in=ACTIVE_STATUSES, slot_freed_at=None)
                    .values_list("upstream_account")
                    .annotate(n=Count("pk"))
                    .values_list("upstream_account", "n")
                )
                samples.append(counts)
        finally:
            connection.close()

    def dispatcher() -> None:
        try:
            while not stop.is_set():
                dispatch_pending()
        finally:
            connection.close()

    def runner() -> None:
        try:
            while not stop.is_set():
                task = Task.objects.filter(status__in=ACTIVE_STATUSES).order_by("?").first()
                if task is None:
                    time.sleep(0.005)
                    continue
                if task.status == Status.SUBMITTED:
                    task_start(task_id=task.pk)
                elif task.slot_freed_at is not None:  # the results queue's step
                    task_finish(task_id=task.pk, token=task.poll_token)
                else:
                    task_poll(task_id=task.pk, token=task.poll_token)
        finally:
            connection.close()

    threads = [threading.Thread(target=sampler)]
    threads += [threading.Thread(target=dispatcher) for _ in range(4)]
    threads += [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if Task.objects.filter(pk__in=all_ids, status__in=TERMINAL_STATUSES).count() == 60:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert Counter(Task.objects.values_list("status", flat=True)) == {Status.SUCCESS: 60}
    assert len(samples) > 50
    busiest = max(count for sample in samples for count in sample.values())
    assert busiest == 3  # slots were full at times, and never overfilled
    # Each task ran on one account, submitted upstream once.
    assert SandboxJob.objects.count() == 60
    assert set(SandboxJob.objects.values_list("submit_calls", flat=True)) == {1}
    assert set(Task.objects.values_list("upstream_account", flat=True)) == {
        account.pk for account in accounts
    }
