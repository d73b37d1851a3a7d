"""The dispatcher: which queued task goes to which account, and when (SPEC §5)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction

from apps.accounts.models import MembershipTier
from apps.engines.models import Health, UpstreamAccount
from apps.tasks import scheduling
from apps.tasks import workers as celery_tasks
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import SANDBOX_POOL_NAME, dispatch_pending
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db


def premium(organization, fund) -> None:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)


def queue(caller, count: int, *, prompt: str = "a long road", **kwargs) -> list[str]:
    ids = []
    for n in range(count):
        ids.append(
            task_submit(
                caller=caller, action=Action.SHORTEN, prompt=f"{prompt} {n}", **kwargs
            ).task.pk
        )
        dispatch_pending()  # what the dispatch message does on a worker
    return ids


def test_the_least_busy_account_gets_the_next_task(caller, organization, fund):
    premium(organization, fund)
    first = sandbox_account("first", concurrency=3)
    queue(caller, 2)  # both on the only account
    second = sandbox_account("second", concurrency=3)
    third = sandbox_account("third", concurrency=3)
    queue(caller, 4)
    running = Counter(
        Task.objects.filter(status=Status.SUBMITTED).values_list("upstream_account", flat=True)
    )
    # second and third were idle: they fill up before first gets its third task, ties by id.
    assert running == {first.pk: 2, second.pk: 2, third.pk: 2}


def test_fairness_holds_beyond_the_dispatch_window(
    caller, organization, fund, make_key, monkeypatch
):
    """A tenant's backlog larger than the window cannot hide another tenant's task."""
    premium(organization, fund)
    monkeypatch.setattr(scheduling, "DISPATCH_WINDOW", 5)
    backlog = queue(caller, 20)
    other = OrganizationFactory(name="Small")
    fund(other, 100_000)
    (single,) = queue(Caller(organization=other, api_key=make_key(other).api_key), 1)
    sandbox_account(concurrency=2)
    assigned = dispatch_pending().assigned
    assert assigned == [backlog[0], single]


def test_unusable_accounts_get_nothing(caller, organization, fund, clock):
    premium(organization, fund)
    states = [
        {"is_enabled": False},
        {"health": Health.BANNED},
        {"health": Health.NEEDS_VERIFICATION},
        {"health": Health.FAST_HOURS_EXHAUSTED},
        {"health": Health.COOLING_DOWN, "cooldown_until": clock.now + timedelta(seconds=1)},
    ]
    for n, state in enumerate(states):
        account = sandbox_account(f"down-{n}")
        UpstreamAccount.objects.filter(pk=account.pk).update(**state)
    ids = queue(caller, 2)
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        Status.NOT_START
    }
    clock.advance(seconds=1)  # the cooldown ends: that account alone takes work
    assert len(dispatch_pending().assigned) == 2
    assert set(
        Task.objects.filter(pk__in=ids).values_list("upstream_account__name", flat=True)
    ) == {"down-4"}


def test_test_tasks_wait_for_the_sandbox_pool_and_never_use_live_accounts(
    organization, test_mode_key
):
    sandbox_account("live", concurrency=10)
    pool = scheduling.sandbox_pool_ensure()
    UpstreamAccount.objects.filter(pk=pool.pk).update(is_enabled=False)
    caller = Caller(organization=organization, api_key=test_mode_key.api_key)
    (task_id,) = queue(caller, 1)
    assert Task.objects.get(pk=task_id).status == Status.NOT_START
    UpstreamAccount.objects.filter(pk=pool.pk).update(is_enabled=True)
    assert dispatch_pending().assigned == [task_id]
    assert Task.objects.get(pk=task_id).upstream_account.name == SANDBOX_POOL_NAME


def test_the_sandbox_pool_is_created_on_demand_with_defaults(organization, test_mode_key):
    assert not UpstreamAccount.objects.exists()
    caller = Caller(organization=organization, api_key=test_mode_key.api_key)
    queue(caller, 1)
    pool = UpstreamAccount.objects.get()
    assert (pool.name, pool.engine, pool.is_sandbox_pool, pool.modes) == (
        SANDBOX_POOL_NAME,
        "sandbox",
        True,
        ["FAST", "RELAX", "TURBO"],
    )
    assert scheduling.sandbox_pool_ensure() == pool  # idempotent


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_dispatch_that_meets_locked_accounts_says_so_and_runs_again(
    organization, live_key, fund, monkeypatch
):
    fund(organization, 100_000)
    account = sandbox_account()
    locked = threading.Event()
    release = threading.Event()

    def hold_the_account() -> None:
        try:
            with transaction.atomic():
                UpstreamAccount.objects.select_for_update().get(pk=account.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_account)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        caller = Caller(organization=organization, api_key=live_key.api_key)
        outcome = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road")
        assert outcome.task.status == Status.NOT_START  # the inline dispatch skipped the lock
        result = dispatch_pending()
        assert (result.assigned, result.contended) == ([], True)

        again: list[float] = []
        monkeypatch.setattr(
            celery_tasks.dispatch,
            "apply_async",
            lambda args=(), countdown=None: again.append(countdown),
        )
        celery_tasks.dispatch()  # the Celery task asks for another run shortly
        assert again == [celery_tasks.CONTENDED_DISPATCH_RETRY]
    finally:
        release.set()
        holder.join(timeout=10)
    result = dispatch_pending()
    assert (result.assigned, result.contended) == ([outcome.task.pk], False)
