"""Accepting a task: the tier limit, the price and the hold, in the caller's transaction.

What must be exact under concurrency — the tier limit and the balance — runs inside one
transaction that locks the organization row, so 200 simultaneous submits on a FREE
organization accept exactly 3. A rejected submit creates no task, stores no file and moves no
token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Organization
from apps.billing.ledger import ledger_hold
from apps.billing.selectors import price_get
from apps.core.errors import ConcurrencyLimitReached

from ..actions import action_spec
from ..enums import UNFINISHED_STATUSES
from ..events import task_changed
from ..lifecycle import kick_dispatcher
from ..models import Task
from ..scheduling import task_expected_to_start
from ..selectors import task_queue_position
from .inputs import discard_files

logger = logging.getLogger(__name__)

SEED_LIMIT = 4_294_967_295


@dataclass(frozen=True)
class SubmitOutcome:
    """What the protocols report: started (code 1), queued (22) or waiting for input (21)."""

    task: Task
    result: str
    queue_position: int = 0

    STARTED = "started"
    QUEUED = "queued"
    MODAL = "modal"


def new_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


def accept(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: tier limit and price. Locks the organization."""
    # NO KEY UPDATE serialises the submits of one organization without blocking the KEY SHARE
    # lock the ledger (and every foreign key insert) takes on the same row; ``of`` keeps the
    # shared tier row unlocked, or every FREE organization would queue behind one another.
    organization = (
        Organization.objects.select_for_update(no_key=True, of=("self",))
        .select_related("tier")
        .get(pk=task.organization_id)
    )
    unfinished = Task.objects.filter(
        organization_id=organization.pk, status__in=UNFINISHED_STATUSES
    ).count()
    limit = organization.tier.max_unfinished_tasks
    if unfinished >= limit:
        raise ConcurrencyLimitReached(
            f"Your {organization.tier.name} plan allows {limit} unfinished tasks at once; "
            f"wait for one to finish or upgrade your plan.",
            details={"limit": limit, "unfinished": unfinished, "tier": organization.tier.code},
        )
    spec = action_spec(task.action)
    base = 0 if task.is_test else price_get(action=spec.price_key, mode=task.mode)
    task.price = spec.price_for(base, task.params or {})
    task.submitted_at = now
    task.start_deadline = now + settings.TASK_START_DEADLINE


def insert_accepted(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: accept ``task``, insert it, hold its price."""
    accept(task, now=now)
    task.save(force_insert=True)
    if not task.is_test:
        ledger_hold(task=task, amount=task.price)
    task_changed(task=task, event_type="task.created")
    kick_dispatcher()


def finish_acceptance(task: Task) -> SubmitOutcome:
    """After commit: answer "started" (code 1) or the queue position (code 22).

    The request does no dispatching: ``insert_accepted`` sent the dispatch message, and a worker
    assigns the task. Whether it starts at once is the scheduler's honest guess (a free slot of
    its pool with no older task of its mode waiting for it).
    """
    if task_expected_to_start(task=task):
        return SubmitOutcome(task, SubmitOutcome.STARTED)
    return SubmitOutcome(task, SubmitOutcome.QUEUED, task_queue_position(task=task))


def create_and_accept(task: Task, *, input_files: Sequence[str]) -> SubmitOutcome:
    """Insert and accept ``task`` in one transaction; its stored inputs go if anything fails."""
    now = timezone.now()
    try:
        with transaction.atomic():
            insert_accepted(task, now=now)
    except BaseException:
        discard_files(input_files)
        raise
    return finish_acceptance(task)
