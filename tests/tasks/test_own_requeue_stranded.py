"""An ``own`` task given back to the queue after a temporary upstream error
(``lifecycle._requeue``) while none of its organization's own accounts serves its mode any
more is failed instead (ACCOUNT_UNAVAILABLE, hold released): nothing could take it from the
queue, and it would hold its tokens until its start deadline. The check runs under the
organization's row lock, the lock every removal of an own account's mode takes, so the two
cannot interleave whichever comes first. Shared-pool requeues take no such lock.

The task reaches ``_requeue`` from its first start, or from the start the sweeper re-sends
after a worker died inside an earlier submit (the lost-worker recovery hands a task back as
assigned, never to the queue). The other ways back to ``NOT_START`` go through acceptance,
which checks the served mode under the same lock already (a MODAL task's second step, an
operator's retry of a failed task), or never put a task in the queue (an operator's move of
an assigned task, the stale-assignment recovery): nothing for this file."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines import own_services
from apps.engines.base import TemporaryEngineError
from apps.engines.models import UpstreamAccount
from apps.engines.own_services import own_account_update
from apps.tasks import lifecycle
from apps.tasks.enums import Action, ErrorCode, Mode, Pool, Status
from apps.tasks.lifecycle import INTERRUPTED_SUBMITS, OWN_ACCOUNT_GONE_REASON, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from apps.webhooks.models import WebhookEndpoint, WebhookEvent
from tests.factories import UpstreamAccountFactory
from tests.races import lock_wait_seen, on_thread

from .conftest import ScriptedEngine

pytestmark = pytest.mark.django_db

FUNDS = 1_000_000


class WorkerDied(BaseException):
    """Stands for SIGKILL inside the submit: nothing after it in the worker runs."""


def _premium(organization: Organization, fund: Any) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, FUNDS)
    return organization


@pytest.fixture
def premium(organization: Organization, fund: Any) -> Organization:
    return _premium(organization, fund)


def _own_account(
    organization: Organization, engine: ScriptedEngine, name: str, **fields: Any
) -> UpstreamAccount:
    fields.setdefault("modes", [Mode.FAST, Mode.RELAX])
    return UpstreamAccountFactory(
        name=name, owner=organization, engine=engine.name, concurrency=1, **fields
    )


def _assigned(organization: Organization, make_key: Any, pool: str = Pool.OWN) -> Task:
    """A FAST task of ``pool`` assigned to an account (``SUBMITTED``), not started yet."""
    caller = Caller(organization=organization, api_key=make_key(organization, pool=pool).api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox", mode=Mode.FAST).task
    dispatch_pending()
    assigned = Task.objects.get(pk=task.pk)
    assert assigned.status == Status.SUBMITTED
    return assigned


def _assert_failed_unservable(task: Task, *, account_id: int | None) -> Task:
    failed = Task.objects.get(pk=task.pk)
    assert (failed.status, failed.error_code) == (Status.FAILURE, ErrorCode.ACCOUNT_UNAVAILABLE)
    assert failed.fail_reason == OWN_ACCOUNT_GONE_REASON.format(mode=Mode.FAST)
    assert failed.upstream_account_id == account_id
    assert failed.finished_at is not None
    kinds = sorted(LedgerEntry.objects.filter(task=failed).values_list("kind", flat=True))
    assert kinds == sorted([EntryKind.HOLD, EntryKind.RELEASE])
    assert failed.tokens_charged == 0
    balance = balance_get(organization=failed.organization)
    assert (balance.available, balance.held) == (FUNDS, 0)
    organization = Organization.objects.get(pk=failed.organization_id)
    assert organization.unfinished_tasks == 0  # the task table's trigger, through task_fail
    assert ledger_audit().ok
    call_command("ledger_check")  # exits 1 (CommandError) on any drift
    return failed


def test_a_requeue_after_the_mode_was_taken_away_fails_the_task_and_releases_its_hold(
    premium, make_key, scripted, sent
):
    endpoint = WebhookEndpoint.objects.create(
        organization=premium, url="https://hooks.example.com/org"
    )
    mine = _own_account(premium, scripted, "mine")
    task = _assigned(premium, make_key)
    assert task.upstream_account_id == mine.pk
    # Assigned when FAST is taken away: left to run (only queued tasks are failed then).
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED

    scripted.script = [TemporaryEngineError("The upstream is busy; try again.")]
    task_start(task_id=task.pk)

    assert scripted.submits == 1
    _assert_failed_unservable(task, account_id=mine.pk)
    [event] = WebhookEvent.objects.filter(task_id=task.pk, event_type="task.failed")
    assert (event.endpoint, event.task_status) == (endpoint, Status.FAILURE)
    # Never announced as back in the queue (only its creation was, as queued).
    requeued = WebhookEvent.objects.filter(task_id=task.pk, task_status=Status.NOT_START)
    assert list(requeued.values_list("event_type", flat=True)) == ["task.created"]
    mine.refresh_from_db()
    assert mine.consecutive_failures == 1  # the upstream's error is still counted


def test_a_requeue_after_a_lost_worker_was_resumed_fails_the_task_too(
    premium, make_key, scripted, sent, clock
):
    """The worker died inside the submit; the sweeper hands the task back to ``task_start``
    (still assigned). FAST was taken away meanwhile, and the new start meets a temporary
    error: the task is failed, not put in the queue."""
    mine = _own_account(premium, scripted, "mine")
    task = _assigned(premium, make_key)
    scripted.script = [WorkerDied(), TemporaryEngineError("The upstream is busy.")]
    with pytest.raises(WorkerDied):
        task_start(task_id=task.pk)
    clock.advance(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_LEASE_GRACE + 1)
    assert tasks_sweep()["resumed"] == 1
    resumed = Task.objects.get(pk=task.pk)
    assert (resumed.status, resumed.submit_claimed_at) == (Status.SUBMITTED, None)
    assert resumed.engine_state == {INTERRUPTED_SUBMITS: 1}
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    task_start(task_id=task.pk)  # the re-sent start: no job found upstream, submitted anew

    assert scripted.submits == 2
    _assert_failed_unservable(task, account_id=mine.pk)


@pytest.mark.parametrize("other_enabled", [True, False], ids=["enabled", "disabled"])
def test_a_mode_another_own_account_still_serves_is_requeued(
    premium, make_key, scripted, sent, other_enabled
):
    """Guard (passes without the fix too): the check fails only what nothing can run."""
    mine = _own_account(premium, scripted, "mine")
    task = _assigned(premium, make_key)
    _own_account(premium, scripted, "second", modes=[Mode.FAST], is_enabled=other_enabled)
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    scripted.script = [TemporaryEngineError("Busy.")]
    with CaptureQueriesContext(connection) as queries:
        task_start(task_id=task.pk)

    # The check ran under the organization's lock (what the shared-pool guard below looks for).
    assert _organization_locks(queries), queries.captured_queries
    assert _own_account_reads(queries), queries.captured_queries
    requeued = Task.objects.get(pk=task.pk)
    assert (requeued.status, requeued.upstream_account_id, requeued.attempts) == (
        Status.NOT_START,
        None,
        1,
    )
    assert balance_get(organization=premium).held == task.price


def test_own_then_shared_tasks_are_requeued_for_the_shared_pool(premium, make_key, scripted, sent):
    """Guard (passes without the fix too): the shared pool can still run them."""
    mine = _own_account(premium, scripted, "mine")
    task = _assigned(premium, make_key, pool=Pool.OWN_THEN_SHARED)
    assert task.upstream_account_id == mine.pk
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    scripted.script = [TemporaryEngineError("Busy.")]
    task_start(task_id=task.pk)

    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    assert balance_get(organization=premium).held == task.price


def test_a_shared_requeue_takes_no_organization_lock_and_reads_no_own_accounts(
    organization, fund, make_key, scripted, scripted_account, sent
):
    """Guard (passes without the fix too): the hot path stays as cheap as it was."""
    fund(organization, FUNDS)
    task = _assigned(organization, make_key, pool=Pool.SHARED)
    scripted.script = [TemporaryEngineError("Busy.")]

    with CaptureQueriesContext(connection) as queries:
        task_start(task_id=task.pk)

    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    assert not _organization_locks(queries), queries.captured_queries
    assert not _own_account_reads(queries), queries.captured_queries


def _organization_locks(queries: CaptureQueriesContext) -> list[str]:
    table = Organization._meta.db_table
    return [
        query["sql"]
        for query in queries.captured_queries
        if f'FROM "{table}"' in query["sql"] and "FOR NO KEY UPDATE" in query["sql"]
    ]


def _own_account_reads(queries: CaptureQueriesContext) -> list[str]:
    table = UpstreamAccount._meta.db_table
    return [
        query["sql"]
        for query in queries.captured_queries
        if f'"{table}"."owner_id" =' in query["sql"]
    ]


# --- a requeue racing with the removal ---------------------------------------------------------


def _assigned_on_one_of_two(
    organization: Organization, make_key: Any, scripted: ScriptedEngine
) -> tuple[Task, UpstreamAccount, UpstreamAccount]:
    """A FAST own task assigned to ``mine``, which then stops serving FAST; ``second``
    (switched off, so it took nothing) is the last own account serving FAST."""
    mine = _own_account(organization, scripted, "mine")
    second = _own_account(organization, scripted, "second", modes=[Mode.FAST], is_enabled=False)
    task = _assigned(organization, make_key)
    assert task.upstream_account_id == mine.pk
    own_account_update(organization=organization, account_id=mine.pk, modes=[Mode.RELAX])
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED
    return task, mine, second


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_requeue_waits_for_a_removal_holding_the_lock_and_fails_the_task(
    organization,
    fund,
    make_key,
    scripted,
    monkeypatch,
    sent,
):
    """The removal of the last FAST account has failed the queued FAST tasks (none) and not
    committed yet when the assigned task's start meets a temporary error: the requeue waits
    for the organization's lock, then sees FAST unserved and fails the task. Without the lock
    the task would go back to the queue behind the removal's back and wait for nothing."""
    premium = _premium(organization, fund)
    task, mine, second = _assigned_on_one_of_two(premium, make_key, scripted)
    failed_queued, go = threading.Event(), threading.Event()
    fail_unservable = own_services.own_tasks_fail_unservable

    def fail_then_pause(**kwargs: Any) -> list[str]:
        failed = fail_unservable(**kwargs)
        if threading.current_thread().name == "removal":
            failed_queued.set()
            go.wait(30)
        return failed

    monkeypatch.setattr(own_services, "own_tasks_fail_unservable", fail_then_pause)
    scripted.script = [TemporaryEngineError("The upstream is busy.")]
    out: dict[str, Any] = {}

    removal = on_thread(
        out,
        "removal",
        lambda: own_account_update(organization=premium, account_id=second.pk, modes=[Mode.RELAX]),
    )
    assert failed_queued.wait(30), out
    start = on_thread(out, "start", lambda: task_start(task_id=task.pk))
    waited = lock_wait_seen(start)
    go.set()
    removal.join(30)
    start.join(30)

    assert not isinstance(out["removal"], BaseException), out["removal"]
    assert not isinstance(out["start"], BaseException), out["start"]
    assert waited, "the requeue did not wait for the removal's organization lock"
    _assert_failed_unservable(task, account_id=mine.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_removal_waits_for_a_requeue_holding_the_lock_and_fails_the_requeued_task(
    organization,
    fund,
    make_key,
    scripted,
    monkeypatch,
    sent,
):
    """The requeue found FAST served (by ``second``) under the organization's lock and has not
    committed yet when ``second`` stops serving FAST: the removal waits for that lock, then
    finds the task queued and fails it."""
    premium = _premium(organization, fund)
    task, _, second = _assigned_on_one_of_two(premium, make_key, scripted)
    checked, go = threading.Event(), threading.Event()
    served = lifecycle.own_modes_served

    def check_then_pause(**kwargs: Any) -> set[str]:
        modes = served(**kwargs)
        if threading.current_thread().name == "start":
            checked.set()
            go.wait(30)
        return modes

    monkeypatch.setattr(lifecycle, "own_modes_served", check_then_pause)
    fail_unservable = own_services.own_tasks_fail_unservable
    failed_by_removal: list[str] = []

    def fail_and_record(**kwargs: Any) -> list[str]:
        failed = fail_unservable(**kwargs)
        failed_by_removal.extend(failed)
        return failed

    monkeypatch.setattr(own_services, "own_tasks_fail_unservable", fail_and_record)
    scripted.script = [TemporaryEngineError("The upstream is busy.")]
    out: dict[str, Any] = {}

    start = on_thread(out, "start", lambda: task_start(task_id=task.pk))
    assert checked.wait(30), out
    removal = on_thread(
        out,
        "removal",
        lambda: own_account_update(organization=premium, account_id=second.pk, modes=[Mode.RELAX]),
    )
    waited = lock_wait_seen(removal)
    go.set()
    start.join(30)
    removal.join(30)

    assert not isinstance(out["start"], BaseException), out["start"]
    assert not isinstance(out["removal"], BaseException), out["removal"]
    assert waited, "the removal did not wait for the requeue's organization lock"
    assert failed_by_removal == [task.pk]
    # Requeued first (account cleared, an attempt counted), then failed by the removal.
    failed = _assert_failed_unservable(task, account_id=None)
    assert failed.attempts == 1
