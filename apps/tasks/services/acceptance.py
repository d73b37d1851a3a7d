"""Accepting a task: the tier limit, the price and the hold, in the caller's transaction.

What must be exact under concurrency — the tier limit and the balance — runs inside one
transaction that locks the organization row, so 200 simultaneous submits on a FREE
organization accept exactly 3. A rejected submit creates no task, stores no file and moves no
token.
"""

from __future__ import annotations

import logging
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.accounts.models import Organization
from apps.billing.ledger import ledger_hold
from apps.billing.selectors import price_get
from apps.core.errors import ConcurrencyLimitReached
from apps.webhooks.models import WebhookEndpoint

from ..actions import action_spec
from ..events import task_changed
from ..lifecycle import kick_dispatcher
from ..models import Task
from ..selectors import UNREAD, queue_head_query, task_queue_estimate
from .inputs import discard_files

logger = logging.getLogger(__name__)

SEED_LIMIT = 4_294_967_295

#: The queue head each accepted task saw under the organization lock, until its answer is
#: made (weak: a task whose transaction failed leaves nothing behind).
queue_heads: weakref.WeakKeyDictionary[Task, Any] = weakref.WeakKeyDictionary()
#: Accepted tasks whose organization had no enabled webhook endpoint under the lock.
no_endpoints: weakref.WeakKeyDictionary[Task, bool] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SubmitOutcome:
    """What the protocols report: started (code 1), queued (22) or waiting for input (21)."""

    task: Task
    result: str
    queue_position: int = 0
    #: When a queued task is expected to start (None: no throughput measured yet).
    expected_start: datetime | None = None

    STARTED = "started"
    QUEUED = "queued"
    MODAL = "modal"


def queue_sequence(mode: str, is_test: bool) -> str:
    """The PostgreSQL sequence numbering the queue of a pool (tasks migration 0007)."""
    return f"tasks_queue_{mode.lower()}_{'test' if is_test else 'live'}"


def new_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


def accept(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: tier limit and price. Locks the organization."""
    # NO KEY UPDATE serialises the submits of one organization without blocking the KEY SHARE
    # lock the ledger (and every foreign key insert) takes on the same row; ``of`` keeps the
    # shared tier row unlocked, or every FREE organization would queue behind one another.
    organizations = Organization.objects.select_for_update(no_key=True, of=("self",))
    if connection.vendor == "postgresql":
        # The task's number in its pool's queue and the queue's head come with the lock, in
        # the same statement.
        organizations = organizations.annotate(
            next_queue_seq=RawSQL("nextval(%s)", [queue_sequence(task.mode, task.is_test)]),
            queue_head=Subquery(queue_head_query(mode=task.mode, is_test=task.is_test)),
            has_endpoints=Exists(
                WebhookEndpoint.objects.filter(organization_id=OuterRef("pk"), is_enabled=True)
            ),
        )
    organization = organizations.select_related("tier").get(pk=task.organization_id)
    task.queue_seq = getattr(organization, "next_queue_seq", None)
    queue_heads[task] = getattr(organization, "queue_head", UNREAD)
    # The endpoints as of this statement, as a SELECT later in the transaction would have
    # seen them a moment later (endpoints are created under this same organization lock).
    no_endpoints[task] = not getattr(organization, "has_endpoints", True)
    # Kept in step by the task table's trigger in every transaction that inserts a task or
    # changes its status; read here under the row lock, so it is exact (no COUNT).
    unfinished = organization.unfinished_tasks
    limit = organization.tier.max_unfinished_tasks
    if unfinished >= limit:
        raise ConcurrencyLimitReached(
            f"Your {organization.tier.name} plan allows {limit} unfinished tasks at once; "
            f"wait for one to finish or upgrade your plan.",
            details={"limit": limit, "unfinished": unfinished, "tier": organization.tier.code},
        )
    price_key = action_spec(task.action).price_key
    task.price = 0 if task.is_test else price_get(action=price_key, mode=task.mode)
    task.submitted_at = now
    task.start_deadline = now + settings.TASK_START_DEADLINE


def insert_accepted(task: Task, *, now: datetime) -> None:
    """Inside the caller's transaction: accept ``task``, insert it, hold its price."""
    accept(task, now=now)
    task.save(force_insert=True)
    if not task.is_test:
        ledger_hold(task=task, amount=task.price)
    task_changed(
        task=task,
        event_type="task.created",
        inserted=True,
        endpoints_none=no_endpoints.pop(task, False),
    )
    kick_dispatcher()


def finish_acceptance(task: Task) -> SubmitOutcome:
    """After commit: answer "started" (code 1) or the queue position (code 22).

    The request does no dispatching: ``insert_accepted`` sent the dispatch message, and a worker
    assigns the task. Whether it starts at once is an honest guess from the pool's free slots
    and the task's place in the pool's queue (``task_queue_estimate``, two indexed reads).
    """
    estimate = task_queue_estimate(task=task, head=queue_heads.pop(task, UNREAD))
    if estimate.position == 0:
        return SubmitOutcome(task, SubmitOutcome.STARTED)
    return SubmitOutcome(
        task, SubmitOutcome.QUEUED, estimate.position, expected_start=estimate.expected_start
    )


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
