"""The expected start of a queued task (``selectors.task_queue_estimate``).

It comes from the slots that may serve the task and its pool's typical job (the mean run time
of its recent successes, else a default per mode, or a sandbox account's ``duration``); the
pool's measured throughput stands in only when it is faster and founded on enough finished
tasks; and it is never later than the task's start deadline. The old estimate divided the
wait by the throughput of the last ten minutes alone: a pool that had been idle was told
hours (or nothing) while its slots were about to open in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import MembershipTier, Organization
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Action, Mode, Pool, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import sandbox_pool_ensure
from apps.tasks.selectors import (
    QueueEstimate,
    pool_throughput_forget,
    task_queue_estimate,
    task_queue_estimates,
)
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory, TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db

#: A job's run time per mode while its pool has no history (docs/api.md, "Queue position and
#: expected start"): turbo faster than fast, relax (which waits in Midjourney's own queue first)
#: slower.
DEFAULT_JOB_SECONDS = {Mode.FAST: 60.0, Mode.TURBO: 20.0, Mode.RELAX: 180.0}


@pytest.fixture
def tenant(organization: Organization, fund: Callable[..., None]) -> Organization:
    MembershipTier.objects.update(max_unfinished_tasks=100)
    organization.refresh_from_db()
    fund(organization, 100_000_000)
    return organization


@pytest.fixture
def others() -> Organization:
    """Another tenant, whose tasks fill the slots and make the pool's history."""
    return OrganizationFactory(name="Others")


def account(name: str, *, slots: int, engine: str = "sandbox", **fields: Any) -> UpstreamAccount:
    """An account of the live pool with ``slots`` slots. Another ``engine`` than the sandbox
    says nothing about how long its jobs take (its mode's default applies)."""
    options = {"duration": fields.pop("duration", 0)}
    made = UpstreamAccountFactory(name=name, concurrency=slots, options=options, **fields)
    if engine != "sandbox":
        UpstreamAccount.objects.filter(pk=made.pk).update(engine=engine, options={})
        made.refresh_from_db()
    return made


def fill(upstream: UpstreamAccount, organization: Organization, **fields: Any) -> None:
    """Every slot of ``upstream`` runs a job of ``organization`` (started just now)."""
    fields.setdefault("mode", Mode.FAST)
    for _ in range(upstream.concurrency):
        TaskFactory(running=True, organization=organization, upstream_account=upstream, **fields)


def history(
    organization: Organization,
    *,
    count: int,
    run: float,
    ago: timedelta,
    status: str = Status.SUCCESS,
    **fields: Any,
) -> None:
    """``count`` tasks that held a slot ``run`` seconds and finished ``ago``."""
    finished = timezone.now() - ago
    started = finished - timedelta(seconds=run)
    for _ in range(count):
        TaskFactory(
            organization=organization,
            status=status,
            engine="sandbox",
            submitted_at=started - timedelta(seconds=1),
            started_at=started,
            finished_at=finished,
            **fields,
        )


def submit(caller: Caller, count: int, *, mode: str = Mode.FAST) -> list[Task]:
    made = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"a fox {n}", mode=mode).task
        for n in range(count)
    ]
    return [Task.objects.get(pk=task.pk) for task in made]


def caller_for(organization: Organization, make_key: Callable[..., Any], **flags: Any) -> Caller:
    return Caller(organization=organization, api_key=make_key(organization, **flags).api_key)


def seconds(estimate: QueueEstimate) -> float:
    assert estimate.expected_start is not None, estimate
    return (estimate.expected_start - timezone.now()).total_seconds()


def expect(estimate: QueueEstimate, *, waiting: int, wait: float) -> None:
    """``estimate`` waits for ``waiting`` slots, expected ``wait`` seconds after it was made
    (the test's own run time since then is allowed for)."""
    assert estimate.position == waiting, estimate
    assert wait - 0.5 < seconds(estimate) <= wait, (estimate, wait)


# --- a pool that was idle ----------------------------------------------------------------------


def test_an_idle_pool_with_history_expects_its_slots_in_seconds(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Thirty slots, all just taken by a burst after a quiet night: one task finished in the
    last ten minutes, so the measured throughput is one every ten minutes (the old estimate:
    ten minutes a slot, half an hour for the third). Yesterday's successes took 45 s each:
    thirty slots open one every 1.5 s."""
    big = account("big", slots=30)
    fill(big, others)
    history(others, count=40, run=45, ago=timedelta(hours=9), mode=Mode.FAST)
    history(others, count=1, run=45, ago=timedelta(minutes=5), mode=Mode.FAST)
    queued = submit(caller_for(tenant, make_key), 3)
    pool_throughput_forget()
    first, _, third = (task_queue_estimate(task=task) for task in queued)
    expect(first, waiting=1, wait=1.5)
    expect(third, waiting=3, wait=4.5)
    # A page of them says the same (one read of the pool's history for the page).
    pool_throughput_forget()
    together = task_queue_estimates(tasks=queued)
    expect(together[queued[2].pk], waiting=3, wait=4.5)


def test_the_dialects_answer_the_idle_pools_estimate(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    big = account("big", slots=30)
    fill(big, others)
    history(others, count=40, run=45, ago=timedelta(hours=9), mode=Mode.FAST)
    key = make_key(tenant)
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=key.plaintext)
    answers = [
        client.post("/mj/submit/imagine", {"prompt": f"owl {n}"}, format="json").json()
        for n in range(2)
    ]
    assert [a["code"] for a in answers] == [22, 22]
    now_ms = timezone.now().timestamp() * 1000
    # The second waits for two slots: 3 s.
    assert 2_000 < answers[1]["properties"]["estimatedStartTime"] - now_ms <= 3_000
    job = client.get("/midjourney/v1/fetch", {"jobId": answers[1]["result"]}).json()["data"]
    assert job["queuePosition"] == 2
    assert 2_000 < job["estimatedStartTime"] - timezone.now().timestamp() * 1000 <= 3_000
    native = client.get(f"/api/v1/tasks/{answers[1]['result']}").json()["properties"]
    assert native["queue_position"] == 2 and native["expected_start"] is not None


@pytest.mark.parametrize("mode", [Mode.FAST, Mode.RELAX, Mode.TURBO])
def test_an_idle_pool_without_history_expects_the_modes_typical_job(
    tenant: Organization, others: Organization, make_key: Callable[..., Any], mode: str
) -> None:
    """A fresh deployment: no task of the pool ever finished (the old estimate: none). Thirty
    slots of an engine that says nothing of its jobs: the mode's default job per slot."""
    big = account("big", slots=30, engine="mjproxy")
    fill(big, others, mode=mode)
    first, second = submit(caller_for(tenant, make_key), 2, mode=mode)
    pool_throughput_forget()
    per_slot = DEFAULT_JOB_SECONDS[mode] / 30
    expect(task_queue_estimate(task=first), waiting=1, wait=per_slot)
    expect(task_queue_estimate(task=second), waiting=2, wait=2 * per_slot)


def test_without_history_a_sandbox_account_says_how_long_its_jobs_take(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Twenty sandbox slots whose jobs take 30 s, ten of another engine (FAST: 60 s): slots
    open at 20/30 + 10/60 = 5/6 a second."""
    sandbox = account("sandbox", slots=20, duration=30)
    other = account("other", slots=10, engine="mjproxy")
    fill(sandbox, others)
    fill(other, others)
    first, second = submit(caller_for(tenant, make_key), 2)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=1.2)
    expect(task_queue_estimate(task=second), waiting=2, wait=2.4)


# --- a busy pool -------------------------------------------------------------------------------


def test_a_busy_pool_goes_by_the_measured_throughput_when_it_is_faster(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Three slots; its successes take 60 s (one slot every 20 s) but many quick failures
    free slots too: sixty tasks finished in the last ten minutes, one every 10 s."""
    small = account("small", slots=3)
    fill(small, others)
    history(others, count=20, run=60, ago=timedelta(minutes=2), mode=Mode.FAST)
    history(
        others, count=40, run=2, ago=timedelta(minutes=3), mode=Mode.FAST, status=Status.FAILURE
    )
    first, second = submit(caller_for(tenant, make_key), 2)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=10)
    expect(task_queue_estimate(task=second), waiting=2, wait=20)


def test_a_thin_measurement_does_not_stand_in_for_the_slots(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Nine tasks finished in the window: too few to go by, however fast they came. Thirty
    slots whose jobs took 45 s open one every 1.5 s (the old estimate: one every 67 s)."""
    big = account("big", slots=30)
    fill(big, others)
    history(others, count=40, run=45, ago=timedelta(hours=2), mode=Mode.FAST)
    history(others, count=9, run=1, ago=timedelta(minutes=1), mode=Mode.FAST, status=Status.FAILURE)
    (first,) = submit(caller_for(tenant, make_key), 1)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=1.5)


def test_a_slower_measured_throughput_does_not_stretch_the_estimate(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Thirty slots of 45 s jobs, only part used lately: twelve finished in ten minutes (one
    every 50 s, the old estimate). The slots open one every 1.5 s once all are busy."""
    big = account("big", slots=30)
    fill(big, others)
    history(others, count=12, run=45, ago=timedelta(minutes=4), mode=Mode.FAST)
    first, second = submit(caller_for(tenant, make_key), 2)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=1.5)
    expect(task_queue_estimate(task=second), waiting=2, wait=3.0)


def test_the_expected_start_is_never_after_the_start_deadline(
    tenant: Organization, others: Organization, make_key: Callable[..., Any], settings: Any
) -> None:
    """One slot of 60 s jobs; twelve tasks finished in the last ten minutes (one every 50 s,
    faster and founded); a start deadline of 90 s. The third in line would start in 150 s,
    when its deadline has failed it already (the old estimate said so): the estimate says the
    deadline, the latest it starts if it starts at all."""
    settings.TASK_START_DEADLINE = timedelta(seconds=90)
    one = account("one", slots=1)
    fill(one, others)
    history(others, count=12, run=60, ago=timedelta(minutes=5), mode=Mode.FAST)
    first, _, third = submit(caller_for(tenant, make_key), 3)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=50)
    assert third.start_deadline is not None and third.submitted_at is not None
    assert third.start_deadline - third.submitted_at == timedelta(seconds=90)
    estimate = task_queue_estimate(task=third)
    assert estimate.position == 3
    assert estimate.expected_start == third.start_deadline


def test_no_serving_slot_and_nothing_measured_says_nothing(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """The only FAST account is banned: no slot serves the task, and the history alone says
    nothing about when one will."""
    banned = account("banned", slots=30, banned=True)
    history(others, count=40, run=45, ago=timedelta(hours=2), mode=Mode.FAST)
    (first,) = submit(caller_for(tenant, make_key), 1)
    pool_throughput_forget()
    estimate = task_queue_estimate(task=first)
    assert (estimate.position, estimate.expected_start) == (1, None)
    assert banned.concurrency == 30


# --- own accounts ------------------------------------------------------------------------------


@pytest.fixture
def own_pool(tenant: Organization, others: Organization) -> UpstreamAccount:
    """The tenant's own FAST account of three slots, all busy with its own tasks; beside it a
    large shared pool that finished many short jobs lately."""
    tenant.tier = MembershipTier.objects.get(code="PREMIUM")  # a plan with own accounts
    tenant.save(update_fields=["tier"])
    mine = account("mine", slots=3, owner=tenant, modes=[Mode.FAST])
    fill(mine, tenant, pool=Pool.OWN)
    shared = account("shared", slots=24)
    history(
        others, count=60, run=5, ago=timedelta(minutes=2), mode=Mode.FAST, upstream_account=shared
    )
    return mine


def test_an_own_pool_with_history_expects_its_own_jobs(
    tenant: Organization, own_pool: UpstreamAccount, make_key: Callable[..., Any]
) -> None:
    """Its own account's successes took 90 s, the last of them hours ago (the old estimate:
    none, nothing finished in the window): three slots open one every 30 s."""
    history(
        tenant,
        count=10,
        run=90,
        ago=timedelta(hours=3),
        mode=Mode.FAST,
        pool=Pool.OWN,
        upstream_account=own_pool,
    )
    first, _, third = submit(caller_for(tenant, make_key, pool=Pool.OWN), 3)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=30)
    expect(task_queue_estimate(task=third), waiting=3, wait=90)


def test_an_own_pool_without_history_expects_the_modes_typical_job(
    tenant: Organization, own_pool: UpstreamAccount, make_key: Callable[..., Any]
) -> None:
    UpstreamAccount.objects.filter(pk=own_pool.pk).update(engine="mjproxy", options={})
    first, second = submit(caller_for(tenant, make_key, pool=Pool.OWN), 2)
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=DEFAULT_JOB_SECONDS[Mode.FAST] / 3)
    expect(task_queue_estimate(task=second), waiting=2, wait=2 * DEFAULT_JOB_SECONDS[Mode.FAST] / 3)


# --- test keys ---------------------------------------------------------------------------------


def test_test_key_tasks_expect_the_sandbox_pools_jobs(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """The built-in sandbox pool: ten slots whose jobs take 5 s, all busy with test tasks. The
    live pool's slow history does not reach it (the old estimate: none)."""
    pool = sandbox_pool_ensure()
    assert (pool.concurrency, pool.options) == (10, {"duration": 5})
    fill(pool, others, is_test=True)
    history(others, count=40, run=300, ago=timedelta(minutes=20), mode=Mode.FAST)
    caller = caller_for(tenant, make_key, is_test=True)
    first, second = submit(caller, 2)
    assert first.is_test and first.status == Status.NOT_START
    pool_throughput_forget()
    expect(task_queue_estimate(task=first), waiting=1, wait=0.5)
    # Then the test pool's own successes: 8 s each.
    history(others, count=5, run=8, ago=timedelta(hours=1), mode=Mode.FAST, is_test=True)
    pool_throughput_forget()
    expect(task_queue_estimate(task=second), waiting=2, wait=1.6)


# --- cost --------------------------------------------------------------------------------------


def test_the_estimate_reads_the_pool_once_and_then_answers_from_the_process(
    tenant: Organization, others: Organization, make_key: Callable[..., Any]
) -> None:
    """Issue 15: the statements of the old estimate, no more. Cold: the tenant's queue head,
    the pool's snapshot, its accounts, its free slots and its history (one statement); warm:
    the queue head and the free slots (a place within the pool's size reads them each time)."""
    big = account("big", slots=30)
    fill(big, others)
    history(others, count=40, run=45, ago=timedelta(hours=9), mode=Mode.FAST)
    _, second = submit(caller_for(tenant, make_key), 2)
    pool_throughput_forget()
    with CaptureQueriesContext(connection) as cold:
        task_queue_estimate(task=second)
    statements = [q["sql"] for q in cold.captured_queries]
    assert len(statements) <= 5, statements
    assert len([s for s in statements if "avg(" in s]) == 1, statements
    with CaptureQueriesContext(connection) as warm:
        again = task_queue_estimate(task=second)
    statements = [q["sql"] for q in warm.captured_queries]
    assert len(statements) <= 2, statements
    assert not [s for s in statements if "avg(" in s], statements
    expect(again, waiting=2, wait=3.0)
