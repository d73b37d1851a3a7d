"""The operator's actions on tasks (the admin): fail a stuck task, run it on another account.

The engine calls here (stopping the old upstream job, the parent-account rule) and the
lifecycle helpers used to re-start a task are transitional: the lifecycle is gaining
functions for them, and these call sites move to those when it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.billing.ledger import ledger_hold
from apps.core.errors import Conflict, NotFound, ValidationFailed
from apps.engines.models import UpstreamAccount

from ..enums import ErrorCode, Status
from ..events import task_changed
from ..lifecycle import NON_TERMINAL, engine_named, enqueue_start, start_lease, task_fail
from ..models import Task
from ..scheduling import account_pick_other
from .acceptance import accept
from .cancel import cancel_upstream_job

OPERATOR_FAIL_REASON = "Failed by an operator."


def _operator_task(task_id: str) -> Task:
    task = (
        Task.objects.select_related("parent", "upstream_account", "organization")
        .filter(pk=str(task_id))
        .first()
    )
    if task is None:
        raise NotFound("Task not found.")
    return task


def task_fail_by_operator(*, task_id: str, reason: str = OPERATOR_FAIL_REASON) -> Task:
    """Fail an unfinished task (errorCode OPERATOR_FAILED) and release its hold.

    For tasks stuck upstream: the customer is not charged, the upstream job is asked to stop,
    and the account's slot frees up. ``reason`` is the customer-facing failReason; why the
    operator did it belongs in the audit log.
    """
    task = _operator_task(task_id)
    if task.is_terminal:
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    failed = task_fail(
        task_id=task.pk,
        reason=reason,
        error_code=ErrorCode.OPERATOR_FAILED,
        from_statuses=NON_TERMINAL,
    )
    if not failed:
        task.refresh_from_db()
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    cancel_upstream_job(task)
    task.refresh_from_db()
    return task


@dataclass(frozen=True)
class RetryOutcome:
    """Where a retried task went. ``task`` carries the work now: the same task moved to
    ``account``, or — for a task that had already failed — a new task (``retry_of`` is the old
    one, which stays FAILURE: a finished task never changes again)."""

    task: Task
    account: UpstreamAccount
    previous_account_id: int | None
    retry_of: Task | None = None


def _pick_other_account(task: Task, *, exclude: int | None, now: datetime) -> UpstreamAccount:
    """The least busy usable account of the task's pool with a free slot, other than
    ``exclude``; locked like the dispatcher locks it, so the slot cannot be taken twice."""
    return account_pick_other(task, exclude=exclude, now=now)


def _check_retryable(task: Task) -> None:
    if task.status in (Status.NOT_START, Status.MODAL):
        raise ValidationFailed(
            f"The task is {task.status}: it has no account yet, the dispatcher will place it."
        )
    if task.status in (Status.SUCCESS, Status.CANCEL):
        raise ValidationFailed(f"The task finished with status {task.status}; nothing to retry.")
    parent = task.parent
    if (
        parent is not None
        and parent.upstream_account_id
        and getattr(
            engine_named(parent.engine or "sandbox"), "follow_ups_need_parent_account", True
        )
    ):
        raise ValidationFailed("This follow-up can only run on its parent's upstream account.")


def task_retry_on_another_account(*, task_id: str) -> RetryOutcome:
    """Run a task on another upstream account than the one it is stuck or failed on.

    An unfinished task (assigned, or running upstream) keeps its id and its hold: it is moved
    to another account with a free slot and submitted there; the old upstream job is asked to
    stop. A task that already failed is finished for good, so a new task with the same input
    is accepted in its place (tier limit and hold as for any submit) and sent to another
    account. Either way nothing changes unless another account has a free slot right now.
    """
    task = _operator_task(task_id)
    _check_retryable(task)
    if task.status == Status.FAILURE:
        return _retry_as_new_task(task)
    return _move_to_another_account(task)


def _move_to_another_account(task: Task) -> RetryOutcome:
    now = timezone.now()
    previous = task.upstream_account
    with transaction.atomic():
        account = _pick_other_account(task, exclude=task.upstream_account_id, now=now)
        moved = Task.objects.filter(
            pk=task.pk,
            status=task.status,
            upstream_account_id=task.upstream_account_id,
            submit_claimed_at=task.submit_claimed_at,
            poll_token=task.poll_token,
        ).update(
            status=Status.SUBMITTED,
            upstream_account=account,
            engine=account.engine,
            upstream_job_id="",
            engine_state={},
            submit_claimed_at=None,
            poll_token="",  # the old poll chain stops at its next step
            slot_freed_at=None,
            progress=0,
            started_at=None,
            lease_expires_at=start_lease(now),
            run_deadline=now + timedelta(seconds=account.run_timeout_seconds),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if not moved:
            raise Conflict("The task changed while it was being moved; nothing was changed.")
        moved_task = Task.objects.select_related("upstream_account").get(pk=task.pk)
        task_changed(task=moved_task, event_type="task.updated")
        enqueue_start(task.pk)
    cancel_upstream_job(task)  # ``task`` still carries the old account and job id
    return RetryOutcome(
        task=moved_task,
        account=account,
        previous_account_id=previous.pk if previous is not None else None,
    )


def _retry_as_new_task(failed: Task) -> RetryOutcome:
    now = timezone.now()
    task = Task(
        organization=failed.organization,
        api_key=failed.api_key,
        created_by=failed.created_by,
        is_test=failed.is_test,
        protocol=failed.protocol,
        action=failed.action,
        mode=failed.mode,
        pool=failed.pool,
        parent=failed.parent,
        custom_id=failed.custom_id,
        prompt=failed.prompt,
        prompt_en=failed.prompt_en,
        state=failed.state,
        params=dict(failed.params or {}),
        metadata=dict(failed.metadata or {}),
        inputs=list(failed.inputs or []),
        notify_hook=failed.notify_hook,
        seed=failed.seed,
        properties={"finalPrompt": (failed.properties or {}).get("finalPrompt", "")},
        # Internal only (never serialised): lets an operator follow the chain of retries.
        engine_state={"retry_of": failed.pk},
    )
    with transaction.atomic():
        # At most one retry per failed task (two operators, a double click): the failed row's
        # lock first, then, in a statement of its own (its snapshot taken after the wait), the
        # retry a concurrent click may have committed meanwhile.
        Task.objects.select_for_update().filter(pk=failed.pk).values_list("pk").first()
        earlier = Task.objects.filter(
            organization_id=failed.organization_id, engine_state__retry_of=failed.pk
        ).values_list("pk", flat=True)
        if (retried_as := earlier.first()) is not None:
            raise Conflict(
                f"Task {failed.pk} was retried already as task {retried_as}; retry that one "
                "if it failed too."
            )
        accept(task, now=now)  # locks the organization: tier limit and price, as a submit
        account = _pick_other_account(task, exclude=failed.upstream_account_id, now=now)
        task.status = Status.SUBMITTED
        task.upstream_account = account
        task.engine = account.engine
        task.lease_expires_at = start_lease(now)
        task.run_deadline = now + timedelta(seconds=account.run_timeout_seconds)
        task.save(force_insert=True)
        if not task.is_test:
            ledger_hold(task=task, amount=task.price)
        task_changed(task=task, event_type="task.created")
        enqueue_start(task.pk)
    return RetryOutcome(
        task=task,
        account=account,
        previous_account_id=failed.upstream_account_id,
        retry_of=failed,
    )
