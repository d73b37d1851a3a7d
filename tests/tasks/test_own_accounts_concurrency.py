"""Bring-your-own accounts under load (issue #18's acceptance): 500 submits from 10 tenants at
once, dispatched by racing dispatchers and run by racing workers on PostgreSQL. An owned account
never runs another tenant's task, an own-only task never runs on a shared account, and each
task is charged exactly its pool's price (the platform fee when its own account ran it)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.ledger import task_rest_key, task_settle_key
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get, own_account_fee_get, price_get
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import TERMINAL_STATUSES, Action, Mode, Pool, Status
from apps.tasks.lifecycle import ACTIVE_STATUSES, task_finish, task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory, UpstreamAccountFactory
from tests.integration_support import WAIT_TIMEOUT

from .test_concurrency import run_concurrently

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TENANTS = 10
PER_TENANT = 50
FUNDS = 10_000_000
#: Tenant index -> the pool its key asks for by default (the rest use the shared pool).
OWN_POOLS = {0: Pool.OWN, 1: Pool.OWN, 2: Pool.OWN_THEN_SHARED, 3: Pool.OWN_THEN_SHARED}


def test_500_concurrent_submits_never_cross_tenants_accounts(make_key, fund):
    premium = MembershipTier.objects.get(code="PREMIUM")
    tenants: list[Organization] = []
    callers: list[Caller] = []
    own_accounts: dict[int, set[int]] = {}
    for index in range(TENANTS):
        organization = OrganizationFactory(name=f"tenant-{index}", tier=premium)
        fund(organization, FUNDS)
        pool = OWN_POOLS.get(index, Pool.SHARED)
        key = make_key(organization, pool=pool).api_key
        tenants.append(organization)
        callers.append(Caller(organization=organization, api_key=key))
        if index in OWN_POOLS:
            own_accounts[organization.pk] = {
                UpstreamAccountFactory(
                    name=f"own-{index}-{n}", modes=[Mode.FAST], concurrency=2, owner=organization
                ).pk
                for n in range(2 if index % 2 else 1)
            }
    shared = {
        UpstreamAccountFactory(name=f"shared-{n}", modes=[Mode.FAST], concurrency=3).pk
        for n in range(3)
    }
    owner_of = dict(UpstreamAccount.objects.values_list("pk", "owner_id"))

    stop = threading.Event()
    samples: list[dict[int, int]] = []
    errors: list[BaseException] = []

    def guarded(loop):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                while not stop.is_set():
                    loop()
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        return run

    def sample() -> None:
        samples.append(
            dict(
                Task.objects.filter(status__in=ACTIVE_STATUSES, slot_freed_at=None)
                .values_list("upstream_account")
                .annotate(n=Count("pk"))
                .values_list("upstream_account", "n")
            )
        )
        time.sleep(0.01)

    def work() -> None:
        task = Task.objects.filter(status__in=ACTIVE_STATUSES).order_by("?").first()
        if task is None:
            time.sleep(0.005)
        elif task.status == Status.SUBMITTED:
            task_start(task_id=task.pk)
        elif task.slot_freed_at is not None:
            task_finish(task_id=task.pk, token=task.poll_token)
        else:
            task_poll(task_id=task.pk, token=task.poll_token)

    # Dispatchers and workers race the submits from the start.
    threads = [threading.Thread(target=guarded(sample))]
    threads += [threading.Thread(target=guarded(dispatch_pending)) for _ in range(3)]
    threads += [threading.Thread(target=guarded(work)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        results = run_concurrently(
            TENANTS * PER_TENANT,
            lambda i: task_submit(
                caller=callers[i % TENANTS],
                # SHORTEN: the sandbox answers with text, so 500 jobs need no image rendering.
                action=Action.SHORTEN,
                prompt=f"a lighthouse at dusk {i}",
            ),
        )
        assert [kind for kind, _ in results] == ["ok"] * (TENANTS * PER_TENANT), [
            value for kind, value in results if kind != "ok"
        ][:3]
        deadline = time.monotonic() + WAIT_TIMEOUT * 3
        while time.monotonic() < deadline:
            if Task.objects.filter(status__in=TERMINAL_STATUSES).count() == TENANTS * PER_TENANT:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []

    tasks = list(Task.objects.all())
    assert len(tasks) == TENANTS * PER_TENANT
    assert Counter(task.status for task in tasks) == {Status.SUCCESS: TENANTS * PER_TENANT}
    served_own = Counter()
    for task in tasks:
        owner = owner_of[task.upstream_account_id]
        # Absolute isolation: an owned account only ever ran its owner's tasks …
        assert owner in (None, task.organization_id), (task.pk, owner, task.organization_id)
        # … an own-only task never ran on a shared account, a shared one never on an own one.
        if task.pool == Pool.OWN:
            assert task.upstream_account_id in own_accounts[task.organization_id]
        elif task.pool == Pool.SHARED:
            assert task.upstream_account_id in shared
        if owner is not None:
            served_own[task.pool] += 1
    assert served_own[Pool.OWN] == 2 * PER_TENANT
    assert served_own[Pool.OWN_THEN_SHARED] > 0  # own accounts took some, the rest went shared
    assert Counter(task.pool for task in tasks) == {
        Pool.OWN: 2 * PER_TENANT,
        Pool.OWN_THEN_SHARED: 2 * PER_TENANT,
        Pool.SHARED: 6 * PER_TENANT,
    }
    # Slots were never overfilled, own or shared.
    concurrency = dict(UpstreamAccount.objects.values_list("pk", "concurrency"))
    assert samples
    for snapshot in samples:
        for account_id, running in snapshot.items():
            assert running <= concurrency[account_id]

    # The money: the fee per task its own account ran (the rest of the hold given back),
    # the price otherwise; nothing else moved, and the ledger audit finds nothing wrong.
    price = price_get(action=Action.SHORTEN, mode=Mode.FAST)
    fee = own_account_fee_get(action=Action.SHORTEN, mode=Mode.FAST)
    assert 0 < fee < price
    captures = dict(
        LedgerEntry.objects.filter(kind=EntryKind.CAPTURE).values_list("task_id", "delta_held")
    )
    rests = {entry.task_id: entry for entry in LedgerEntry.objects.filter(kind=EntryKind.RELEASE)}
    spent: Counter[int] = Counter()
    for task in tasks:
        own = owner_of[task.upstream_account_id] is not None
        charged = fee if own else price
        assert -captures[task.pk] == charged, (task.pk, task.pool, own)
        assert task.tokens_charged == task.tokens_captured == charged
        if task.pool == Pool.OWN_THEN_SHARED and own:
            rest = rests[task.pk]
            assert rest.idempotency_key == task_rest_key(task.pk)
            assert (rest.delta_available, rest.delta_held) == (price - fee, fee - price)
        else:
            assert task.pk not in rests
        assert LedgerEntry.objects.filter(idempotency_key=task_settle_key(task.pk)).count() == 1
        spent[task.organization_id] += charged
    for organization in tenants:
        balance = balance_get(organization=organization)
        assert (balance.available, balance.held) == (FUNDS - spent[organization.pk], 0)
    report = ledger_audit()
    assert report.ok, report.drifts[:5]
