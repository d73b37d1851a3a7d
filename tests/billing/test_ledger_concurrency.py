"""The ledger under real concurrency: real threads, real PostgreSQL transactions and row locks."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection, transaction

from apps.accounts.models import Organization
from apps.billing.audit import ledger_audit
from apps.billing.ledger import ledger_capture, ledger_hold, ledger_release, ledger_topup
from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.core.errors import InsufficientBalance
from apps.tasks.models import Task
from tests.factories import OrganizationFactory

from .helpers import new_tasks, run_all, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_2000_holds_with_funds_for_1000_accept_exactly_1000():
    organization = OrganizationFactory()
    price = 14_000
    ledger_topup(organization=organization, amount=1_000 * price, idempotency_key="funds")
    tasks = new_tasks(organization, 2_000)
    random.Random(4).shuffle(tasks)

    def hold(task: Task) -> str:
        try:
            ledger_hold(task=task, amount=price)
        except InsufficientBalance:
            return "refused"
        return "held"

    outcomes = Counter(run_all(hold, tasks))

    assert outcomes == {"held": 1_000, "refused": 1_000}
    assert snapshot(organization) == (0, 1_000 * price, 1 + 1_000)
    holds = LedgerEntry.objects.filter(organization=organization, kind=EntryKind.HOLD)
    assert holds.count() == 1_000
    assert holds.values("task_id").distinct().count() == 1_000
    # Never negative at any point: every recorded running balance stayed >= 0, in one chain.
    afters = list(
        LedgerEntry.objects.filter(organization=organization)
        .order_by("id")
        .values_list("available_after", flat=True)
    )
    assert min(afters) == 0
    assert afters == sorted(afters, reverse=True)
    assert afters[-1] == 0
    report = ledger_audit(chunk_size=256)
    assert report.ok, [str(d) for d in report.drifts]
    assert (report.entries, report.tasks) == (1_001, 1_000)


def test_the_same_idempotency_key_used_concurrently_moves_tokens_once():
    organization = OrganizationFactory()

    def topup(_: int) -> int:
        return ledger_topup(
            organization=organization, amount=35_000, idempotency_key="stripe:checkout:cs_1"
        ).pk

    entry_ids = set(run_all(topup, list(range(64))))

    assert len(entry_ids) == 1
    assert snapshot(organization) == (35_000, 0, 1)


def test_the_same_task_held_concurrently_holds_once():
    organization = OrganizationFactory()
    ledger_topup(organization=organization, amount=100_000, idempotency_key="funds")
    (task,) = new_tasks(organization, 1)

    entry_ids = set(run_all(lambda _: ledger_hold(task=task, amount=14_000).pk, list(range(48))))

    assert len(entry_ids) == 1
    assert snapshot(organization) == (86_000, 14_000, 2)


def test_capture_and_release_racing_settle_each_task_exactly_once():
    organization = OrganizationFactory()
    tasks = new_tasks(organization, 60)
    prices = {task.pk: 1_000 * (i + 1) for i, task in enumerate(tasks)}
    total = sum(prices.values())
    ledger_topup(organization=organization, amount=total, idempotency_key="funds")
    for task in tasks:
        ledger_hold(task=task, amount=prices[task.pk])
    # Eight contenders per task, adjacent in the job list so they really run at the same time.
    jobs = [(task, op) for task in tasks for op in ["capture", "release"] * 4]

    def settle(job: tuple[Task, str]) -> tuple[str, str]:
        task, op = job
        entry = (ledger_capture if op == "capture" else ledger_release)(task=task)
        assert entry is not None
        return task.pk, entry.kind

    results = run_all(settle, jobs)

    settles = LedgerEntry.objects.filter(
        organization=organization, kind__in=(EntryKind.CAPTURE, EntryKind.RELEASE)
    )
    assert settles.count() == 60
    assert settles.values("task_id").distinct().count() == 60
    winner = dict(settles.values_list("task_id", "kind"))
    # Every contender was told the same outcome: the entry that won.
    assert all(winner[task_id] == kind for task_id, kind in results)
    captured = sum(prices[task_id] for task_id, kind in winner.items() if kind == "capture")
    assert snapshot(organization) == (total - captured, 0, 1 + 60 + 60)
    for task_id, kind in winner.items():
        Task.objects.filter(pk=task_id).update(
            status="SUCCESS" if kind == EntryKind.CAPTURE else "FAILURE"
        )
    report = ledger_audit()
    assert report.ok, [str(d) for d in report.drifts]


def test_movements_of_many_organizations_do_not_block_each_other_into_errors():
    organizations = [OrganizationFactory() for _ in range(8)]
    jobs = [(org, n) for n in range(40) for org in organizations]

    def topup(job: tuple[Organization, int]) -> None:
        organization, n = job
        ledger_topup(organization=organization, amount=n + 1, idempotency_key=f"k{n}")

    run_all(topup, jobs)

    for organization in organizations:
        assert snapshot(organization) == (sum(range(1, 41)), 0, 40)
    assert ledger_audit().ok


def test_a_submit_locking_the_organization_cannot_deadlock_with_a_settle():
    """Lock order: organization, then balance. A settle that locked the balance first would
    wait on the submit's organization lock (foreign key check) while the submit waits on the
    balance: PostgreSQL would abort one of them as a deadlock."""
    organization = OrganizationFactory()
    ledger_topup(organization=organization, amount=100_000, idempotency_key="funds")
    held, queued = new_tasks(organization, 2)
    ledger_hold(task=held, amount=14_000)
    org_locked = threading.Event()
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with transaction.atomic():
                Organization.objects.select_for_update().get(pk=organization.pk)
                org_locked.set()
                time.sleep(0.5)  # the settle below starts meanwhile
                ledger_hold(task=queued, amount=7_000)
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)
        finally:
            connection.close()

    def settle() -> None:
        try:
            org_locked.wait(5)
            ledger_release(task=held)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit), threading.Thread(target=settle)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert snapshot(organization) == (93_000, 7_000, 4)
    assert Balance.objects.get(organization=organization).available >= 0
