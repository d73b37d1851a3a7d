"""500 tasks whose success, failure, sweep and cancel race through the real task lifecycle.

Each task must end with exactly one settle — a capture if it ended SUCCESS, a release
otherwise — and ``ledger_check`` must be clean afterwards and fail on a corrupted row.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from apps.accounts.models import MembershipTier
from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_topup
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.engines.base import PollResult
from apps.tasks.enums import ErrorCode, Status
from apps.tasks.lifecycle import task_fail, task_succeed
from apps.tasks.models import Task
from apps.tasks.scheduling import tasks_sweep
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import OrganizationFactory

from .helpers import fast_commits, run_all

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TASKS = 500
PRICE = 3_500  # SHORTEN, FAST


def _accept_tasks(organization, count: int) -> list[str]:
    caller = Caller(organization=organization)
    return [
        task_submit(caller=caller, action="SHORTEN", prompt=f"race number {n} please").task.pk
        for n in range(count)
    ]


def test_success_failure_sweep_and_cancel_race_to_exactly_one_settle_each():
    tier = MembershipTier.objects.create(code="RACE", name="Race", max_unfinished_tasks=TASKS)
    organization = OrganizationFactory(tier=tier)
    funds = TASKS * PRICE + 1_000
    ledger_topup(organization=organization, amount=funds, idempotency_key="race-funds")
    ids = _accept_tasks(organization, TASKS)
    assert Balance.objects.get(organization=organization).held == TASKS * PRICE

    # Most tasks run (and are past their run timeout, so the sweeper wants to fail them too);
    # some are still queued and past their start deadline.
    past = timezone.now() - timedelta(seconds=1)
    running, queued = ids[: TASKS * 4 // 5], ids[TASKS * 4 // 5 :]
    Task.objects.filter(pk__in=running).update(
        status=Status.IN_PROGRESS, started_at=past, run_deadline=past, lease_expires_at=past
    )
    Task.objects.filter(pk__in=queued).update(start_deadline=past)

    def succeed(task_id: str) -> None:
        outcome = PollResult(status=PollResult.SUCCESS, progress=100, properties={"x": 1})
        task_succeed(task_id=task_id, outcome=outcome)

    def fail(task_id: str) -> None:
        task_fail(task_id=task_id, reason="Upstream said no.", error_code=ErrorCode.UPSTREAM_ERROR)

    def cancel(task_id: str) -> None:
        try:
            task_cancel(organization=organization, task_id=task_id)
        except Exception as exc:  # a finished task refuses to cancel; that is a valid outcome
            assert "already finished" in str(exc)

    racers = {"succeed": succeed, "fail": fail, "cancel": cancel}
    jobs = [(name, task_id) for task_id in ids for name in racers]
    random.Random(7).shuffle(jobs)

    stop = threading.Event()
    sweeps: list[dict[str, int]] = []

    def sweeper() -> None:
        try:
            fast_commits()
            while not stop.is_set():
                sweeps.append(tasks_sweep())
        finally:
            connection.close()

    sweepers = [threading.Thread(target=sweeper) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    try:
        run_all(lambda job: racers[job[0]](job[1]), jobs)
    finally:
        stop.set()
        for thread in sweepers:
            thread.join()
    assert sweeps, "the sweepers never ran"

    tasks = dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert set(tasks.values()) <= {Status.SUCCESS, Status.FAILURE, Status.CANCEL}
    settles = Counter(
        LedgerEntry.objects.filter(
            organization=organization, kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE]
        ).values_list("task_id", flat=True)
    )
    assert set(settles) == set(ids)
    assert set(settles.values()) == {1}
    kinds = dict(
        LedgerEntry.objects.filter(
            organization=organization, kind__in=[EntryKind.CAPTURE, EntryKind.RELEASE]
        ).values_list("task_id", "kind")
    )
    for task_id, status in tasks.items():
        expected = EntryKind.CAPTURE if status == Status.SUCCESS else EntryKind.RELEASE
        assert kinds[task_id] == expected, (task_id, status, kinds[task_id])
    # Every path got its turn somewhere.
    assert {Status.SUCCESS, Status.FAILURE, Status.CANCEL} <= set(tasks.values())
    captured = sum(1 for status in tasks.values() if status == Status.SUCCESS)
    balance = Balance.objects.get(organization=organization)
    assert (balance.available, balance.held) == (funds - captured * PRICE, 0)

    report = ledger_audit(chunk_size=128)
    assert report.ok, [str(d) for d in report.drifts]
    out = StringIO()
    call_command("ledger_check", stdout=out)
    assert "ledger OK" in out.getvalue()

    # A deliberately corrupted row makes ledger_check fail and say what drifted.
    Balance.objects.filter(organization=organization).update(available=balance.available + 1)
    drift_out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("ledger_check", stdout=drift_out, stderr=StringIO())
    assert failed.value.returncode == 1
    assert f"organization {organization.pk}" in drift_out.getvalue().lower()
