from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connection

from apps.accounts.models import Organization
from apps.billing.models import Balance, LedgerEntry
from apps.tasks.models import Task
from tests.factories import TaskFactory

THREADS = 16


def new_task(organization: Organization, *, status: str = "SUBMITTED", **fields: Any) -> Task:
    """A bare Task row (no task services): enough for the ledger to hold against."""
    return TaskFactory(organization=organization, status=status, **fields)


def new_tasks(organization: Organization, count: int, *, status: str = "SUBMITTED") -> list[Task]:
    return Task.objects.bulk_create(
        TaskFactory.build_batch(count, organization=organization, status=status)
    )


def snapshot(organization: Organization) -> tuple[int, int, int]:
    """(available, held, entry count): what a denied path must leave unchanged."""
    balance = Balance.objects.get(organization=organization)
    return (
        balance.available,
        balance.held,
        LedgerEntry.objects.filter(organization=organization).count(),
    )


def fast_commits() -> None:
    """Skip the WAL flush at commit on this connection: locking and visibility, which these tests
    are about, are unchanged; only durability after an OS crash is, which a test never needs."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")


def run_all(fn: Callable[..., Any], jobs: list[Any]) -> list[Any]:
    """Run ``fn`` over ``jobs`` from THREADS threads, each on its own connection.

    Jobs are dealt round-robin, so neighbouring jobs run at the same time on different threads.
    """
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(THREADS)

    def worker(offset: int) -> None:
        try:
            fast_commits()
            start.wait()
            for index in range(offset, len(jobs), THREADS):
                results[index] = fn(jobs[index])
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker, offset) for offset in range(THREADS)]:
            future.result()
    return results
