from __future__ import annotations

import itertools
from typing import Any

from apps.accounts.models import Organization
from apps.billing.models import Balance, LedgerEntry
from apps.tasks.models import Task

_task_ids = itertools.count(1)


def new_task(organization: Organization, *, status: str = "SUBMITTED", **fields: Any) -> Task:
    """A bare Task row (no task services): enough for the ledger to hold against.

    Ids are explicit so thousands made in one millisecond never collide.
    """
    fields.setdefault("action", "IMAGINE")
    fields.setdefault("mode", "FAST")
    return Task.objects.create(
        id=f"77{next(_task_ids):012d}", organization=organization, status=status, **fields
    )


def new_tasks(organization: Organization, count: int, *, status: str = "SUBMITTED") -> list[Task]:
    return Task.objects.bulk_create(
        Task(
            id=f"77{next(_task_ids):012d}",
            organization=organization,
            action="IMAGINE",
            mode="FAST",
            status=status,
        )
        for _ in range(count)
    )


def snapshot(organization: Organization) -> tuple[int, int, int]:
    """(available, held, entry count): what a denied path must leave unchanged."""
    balance = Balance.objects.get(organization=organization)
    return (
        balance.available,
        balance.held,
        LedgerEntry.objects.filter(organization=organization).count(),
    )
