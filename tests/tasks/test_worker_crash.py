"""A worker killed mid-job loses nothing and runs nothing twice (SPEC §5, issue acceptance).

The worker gets SIGKILL while six sandbox jobs run and six more wait for a slot: its unacked
poll messages are gone with it. A new worker starts and the sweeper runs as beat would; every
task must still finish, each upstream job submitted exactly once, each hold settled once.
"""

from __future__ import annotations

import time

import pytest

from apps.accounts.models import MembershipTier
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.models import SandboxJob
from apps.tasks.enums import TERMINAL_STATUSES, Action, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.integration_support import WAIT_TIMEOUT, wait_for

from .helpers import sandbox_account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

#: Worker settings: a short lease so the sweeper may take over a second after a missed poll,
#: and a hard time limit (hence submit lease) of a few seconds.
CRASH_ENV = {
    "TASK_LEASE_GRACE": "2",
    "CELERY_TASK_SOFT_TIME_LIMIT": "3",
    "CELERY_TASK_TIME_LIMIT": "4",
}
SWEEP_INTERVAL = 0.5


def statuses(ids: list[str]) -> dict[str, str]:
    return dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))


def test_killed_worker_loses_nothing_and_submits_nothing_twice(
    celery_worker_factory, organization, live_key, fund, settings
):
    settings.TASK_LEASE_GRACE = 2
    settings.TASK_POLL_INTERVAL = 0.2
    organization.tier = MembershipTier.objects.get(code="VIP")
    organization.save(update_fields=["tier"])
    fund(organization, 1_000_000)
    sandbox_account("crash", modes="FAST", concurrency=6, duration="3")
    caller = Caller(organization=organization, api_key=live_key.api_key)

    first = celery_worker_factory(**CRASH_ENV)
    # Two image jobs and ten text jobs: the machine may be small, and rendering is not what
    # this test is about.
    ids = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"harbour number {n}").task.pk
        for n in range(2)
    ] + [
        task_submit(
            caller=caller, action=Action.SHORTEN, prompt=f"a quiet harbour at dawn {n}"
        ).task.pk
        for n in range(10)
    ]

    # Wait until six jobs are running upstream (progress reported), then pull the plug.
    wait_for(
        lambda: (
            Task.objects.filter(pk__in=ids, status=Status.IN_PROGRESS, progress__gt=0).count() == 6
        ),
        interval=0.05,
        what=lambda: f"six running jobs: {statuses(ids)}",
    )
    first.kill()
    assert not first.alive
    at_kill = statuses(ids)
    assert list(at_kill.values()).count(Status.IN_PROGRESS) == 6
    assert list(at_kill.values()).count(Status.NOT_START) == 6
    assert SandboxJob.objects.count() == 6

    # Nothing moves without a worker: the dead one's poll chains are gone.
    time.sleep(1.0)
    assert statuses(ids) == at_kill

    celery_worker_factory(**CRASH_ENV)
    # Recovery is awaited, not timed: the bound only stops a broken run, and it stays well below
    # the 600 s run timeout, so a task can only succeed here because the sweeper restarted it.
    reports = []
    assert settings.TASK_DEFAULT_RUN_TIMEOUT.total_seconds() > WAIT_TIMEOUT
    wait_for(
        lambda: all(status in TERMINAL_STATUSES for status in statuses(ids).values()),
        between=lambda: reports.append(tasks_sweep()),  # what beat runs every interval
        interval=SWEEP_INTERVAL,
        what=lambda: f"every task to finish: {statuses(ids)}",
    )
    final = statuses(ids)
    assert set(final.values()) == {Status.SUCCESS}, list(
        Task.objects.exclude(status=Status.SUCCESS).values_list("action", "fail_reason")
    )
    # The six running jobs were resumed by the sweeper (poll chains restarted) or, when the
    # broker's visibility timeout passed first on a slow machine, by the redelivered poll
    # message of the dead worker (acks_late): both are recovery. The sweeper did its part.
    assert sum(report["restarted"] for report in reports) >= 1

    # One upstream job per task, submitted once; one hold and one capture per task.
    jobs = SandboxJob.objects.filter(task_id__in=ids)
    assert sorted(jobs.values_list("task_id", flat=True)) == sorted(ids)
    assert set(jobs.values_list("submit_calls", flat=True)) == {1}
    for task_id in ids:
        kinds = list(
            LedgerEntry.objects.filter(task_id=task_id)
            .order_by("id")
            .values_list("kind", flat=True)
        )
        assert kinds == [EntryKind.HOLD, EntryKind.CAPTURE]
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (1_000_000 - 2 * 14000 - 10 * 3500, 0)
