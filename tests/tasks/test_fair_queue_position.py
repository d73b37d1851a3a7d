"""A queued task's position is its place in the dispatcher's fair queue (issues 14 and 18).

The predictions are checked against the real dispatcher (``scheduling.dispatch_pending``) on
a seeded queue: several tenants, uneven queues, some tenants already running tasks. Slots
open one at a time and each pass starts exactly one task, so the order tasks start in is
observed task by task and compared with the positions predicted before any of them started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import MembershipTier, Organization
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.selectors import (
    pool_throughput_forget,
    task_queue_estimate,
    task_queue_estimates,
    task_tasks_ahead,
)
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants(
    organization: Organization, fund: Callable[..., None], make_key: Callable[..., Any]
) -> dict[str, Caller]:
    MembershipTier.objects.update(max_unfinished_tasks=100)
    orgs = {"A": organization} | {name: OrganizationFactory() for name in "BCD"}
    callers = {}
    for name, org in orgs.items():
        org.refresh_from_db()
        fund(org, 10_000_000)
        callers[name] = Caller(organization=org, api_key=make_key(org).api_key)
    return callers


def submit(caller: Caller, label: str, *, mode: str = Mode.FAST) -> Task:
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt=label, mode=mode)
    return Task.objects.get(pk=outcome.task.pk)


def queued_fast() -> list[Task]:
    return list(Task.objects.filter(status=Status.NOT_START, mode=Mode.FAST))


def predicted_order() -> list[str]:
    """Every queued FAST task by its predicted number of tasks ahead: a total order."""
    ahead = {task.pk: task_tasks_ahead(task=task, fresh=True) for task in queued_fast()}
    assert sorted(ahead.values()) == list(range(len(ahead))), ahead
    return sorted(ahead, key=ahead.__getitem__)


def open_one_slot(account: UpstreamAccount) -> str:
    """Raise the account's concurrency by one and run one real dispatch pass."""
    UpstreamAccount.objects.filter(pk=account.pk).update(concurrency=account.concurrency + 1)
    account.refresh_from_db()
    result = dispatch_pending()
    assert len(result.assigned) == 1, result
    return result.assigned[0]


def finish(task_id: str) -> None:
    """The upstream finished the job: its slot is free (its tenant runs one task fewer)."""
    now = timezone.now()
    Task.objects.filter(pk=task_id).update(
        status=Status.SUCCESS, finished_at=now, slot_freed_at=now, progress=100
    )


def seed(tenants: dict[str, Caller]) -> UpstreamAccount:
    """A and C run tasks already (A two, C one); then uneven queues, interleaved in time:
    A 7, B 3, C 3, D 1."""
    account = sandbox_account(modes="FAST", concurrency=3)
    for name in "AAC":
        submit(tenants[name], f"running {name}")
    assert len(dispatch_pending().assigned) == 3
    for n, name in enumerate("AABACAACBDCABA"):
        submit(tenants[name], f"queued {name}{n}")
    # A RELAX backlog is another pool's queue: it must not move the FAST positions.
    submit(tenants["B"], "relax one", mode=Mode.RELAX)
    return account


def test_predicted_positions_are_the_order_the_dispatcher_starts_tasks(tenants):
    account = seed(tenants)
    counts = dict(
        Task.objects.filter(status=Status.NOT_START, mode=Mode.FAST)
        .values_list("organization__name")
        .annotate(n=Count("pk"))
        .values_list("organization__name", "n")
    )
    assert sorted(counts.values()) == [1, 3, 3, 7]  # uneven queues
    expected = predicted_order()
    # Not first come, first served: the fair queue reorders the tenants' tasks.
    by_submission = [t.pk for t in sorted(queued_fast(), key=lambda t: (t.submitted_at, t.pk))]
    assert expected != by_submission
    started = [open_one_slot(account) for _ in expected]
    assert started == expected
    assert queued_fast() == []


def test_after_every_finish_and_arrival_the_task_predicted_next_is_the_one_started(tenants):
    account = seed(tenants)
    running = list(
        Task.objects.filter(status=Status.SUBMITTED)
        .order_by("submitted_at")
        .values_list("pk", flat=True)
    )
    rounds = 0
    while queued_fast():
        rounds += 1
        # A slot opens the way it does in production: a running task finishes.
        finish(running.pop(0))
        if rounds in (2, 5):  # newcomers join at their own level
            submit(tenants["D"], f"late D{rounds}")
            submit(tenants["B"], f"late B{rounds}")
        expected = predicted_order()
        result = dispatch_pending()
        assert result.assigned == [expected[0]], (rounds, result.assigned, expected[:3])
        running.append(result.assigned[0])
    assert rounds == 18  # 14 seeded and 4 late tasks, one start per finish
    assert account.concurrency == 3


def test_the_estimate_turns_the_place_into_slots_to_wait_for(tenants):
    account = seed(tenants)
    order = predicted_order()
    # Three slots are busy and none free: the first in line waits for one slot to open.
    first = task_queue_estimate(task=Task.objects.get(pk=order[0]), fresh=True)
    fifth = task_queue_estimate(task=Task.objects.get(pk=order[4]), fresh=True)
    assert (first.ahead, first.position) == (0, 1)
    assert (fifth.ahead, fifth.position) == (4, 5)
    # Two free slots: the first two start now, the fifth waits for three more.
    UpstreamAccount.objects.filter(pk=account.pk).update(concurrency=5)
    pool_throughput_forget()  # the pool's size is remembered for a few seconds
    assert task_queue_estimate(task=Task.objects.get(pk=order[1]), fresh=True).position == 0
    assert task_queue_estimate(task=Task.objects.get(pk=order[4]), fresh=True).position == 3


def test_the_estimate_reads_indexes_only(tenants):
    """The snapshot and the tie probe walk the partial indexes of queued rows, never the
    table (sequential scans off: the table is tiny here)."""
    from django.db import connection

    from apps.tasks import selectors

    seed(tenants)
    pool = {"mode": Mode.FAST.value, "is_test": False}
    plans = []
    with connection.cursor() as cursor:
        # Fresh statistics: on a table this small the plan otherwise follows whatever the
        # autovacuum last saw (under -n 2 another plan was seen now and then).
        cursor.execute("ANALYZE tasks_task")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        for sql, params in (
            (selectors._snapshot_sql(), pool),
            (selectors._probe_sql(), {"orgs": [1, 2], "seqs": [1, 1], **pool}),
        ):
            cursor.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    for plan in plans:
        scans = [line for line in plan.splitlines() if " Scan using " in line]
        assert scans, plan
        # Queued rows through their partial indexes (the tenant queue's, or the fair pick's,
        # which leads with the same columns); the running count through the organization's
        # status index.
        allowed = ("task_tenant_queued", "task_queued_fair", "task_org_status")
        assert all(any(name in s for name in allowed) for s in scans), plan
        assert "Seq Scan" not in plan, plan
    assert "task_tenant_queued" in plans[0], plans[0]


def test_a_page_of_estimates_is_each_tasks_own_in_a_few_statements(tenants):
    """A list reads its queued tasks' estimates together (``task_queue_estimates``): the same
    answer as one task at a time, in statements that do not grow with the page."""
    seed(tenants)
    queued = queued_fast()
    one_by_one = {}
    for task in queued:
        estimate = task_queue_estimate(task=task, fresh=True)
        one_by_one[task.pk] = (estimate.position, estimate.ahead)
    assert len(set(one_by_one.values())) == len(queued)  # every task its own place

    def page(tasks: list[Task]) -> tuple[dict[str, tuple[int, int]], int]:
        with CaptureQueriesContext(connection) as statements:
            estimates = task_queue_estimates(tasks=tasks)
        return {pk: (e.position, e.ahead) for pk, e in estimates.items()}, len(statements)

    together, statements = page(queued)
    assert together == one_by_one
    _, fewer = page(queued[:2])
    # One queue head per tenant (four tenants), one probe of tied tasks for the pool, and a
    # read of free slots for each place within the pool's three slots: not one per task.
    assert statements <= 4 + 1 + 3 < len(queued)
    assert statements <= fewer + 3 + 2  # 14 tasks cost what 2 of them do, but for the tenants
    # A task not queued has no estimate; others' estimates are unaffected by it.
    done = Task.objects.exclude(status=Status.NOT_START).first()
    assert done is not None
    assert task_queue_estimates(tasks=[done]) == {}


def test_a_burst_onto_an_idle_pool_counts_the_free_slots_the_tasks_ahead_take(tenants):
    """Five submits before the dispatcher ran, three free slots: the first three start as soon
    as it runs, so the fifth waits for two slots to open, not five (its place is beyond the
    pool's size, which must not be read as "every slot is busy")."""
    sandbox_account(concurrency=3)
    pool_throughput_forget()
    tasks = [submit(tenants["A"], f"burst {n}") for n in range(5)]
    estimates = [task_queue_estimate(task=task) for task in tasks]
    assert [(e.ahead, e.position) for e in estimates] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2)]
    # Every slot taken: the same place waits for as many slots as tasks are before it.
    dispatch_pending()
    pool_throughput_forget()
    fifth = task_queue_estimate(task=Task.objects.get(pk=tasks[4].pk), fresh=True)
    assert (fifth.ahead, fifth.position) == (1, 2)
