"""Unfinished tasks ended before their time, their holds released: a customer's cancel, and
the queued own-only tasks no account of their organization can run any more."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey
from apps.core.errors import ValidationFailed

from ..enums import ErrorCode, Pool, Status
from ..errors import InputError
from ..lifecycle import NON_TERMINAL, OWN_ACCOUNT_GONE_REASON, task_cancel_upstream, task_fail
from ..models import Task
from ..selectors import task_get

logger = logging.getLogger(__name__)


def task_cancel(
    *,
    organization: Organization,
    task_id: str,
    api_key: ApiKey | None = None,
    reason: str = "Cancelled by the customer.",
) -> Task:
    """Cancel a task that has not finished; its hold is released. Finished tasks are final.

    ``api_key`` is the key asking (the API): it cancels only tasks of its own kind, as presses
    and modal steps refuse to mix them, so a free test key cannot stop a paid live task (nor a
    live key a test one). The dashboard and the operator pass none: they cancel any task of the
    organization.

    ``reason`` is what the customer reads as the task's failReason (an operator's cancel says
    so, rather than blaming the customer).
    """
    task = task_get(organization=organization, task_id=task_id)
    if api_key is not None and api_key.is_test != task.is_test:
        raise InputError(
            "Test-mode and live tasks cannot be mixed: use a key of the same kind as the task.",
            field="task",
        )
    if task.is_terminal:
        raise InputError(f"The task already finished with status {task.status}.", field="task")
    cancelled = task_fail(
        task_id=task.pk,
        reason=reason,
        error_code=ErrorCode.CANCELLED,
        from_statuses=NON_TERMINAL,
        status=Status.CANCEL,
    )
    task.refresh_from_db()
    if not cancelled and not task.status == Status.CANCEL:
        raise ValidationFailed(f"The task already finished with status {task.status}.")
    if cancelled:
        cancel_upstream_job(task)
    return task


def cancel_upstream_job(task: Task) -> None:
    """Best effort: stop the job ``task`` started upstream (the lifecycle asks its engine)."""
    task_cancel_upstream(task=task)


def own_tasks_fail_unservable(
    *, organization_id: int, modes: Iterable[str], reason: str = OWN_ACCOUNT_GONE_REASON
) -> list[str]:
    """Fail the organization's queued (``NOT_START``) ``own``-pool tasks of ``modes`` at once,
    with errorCode ACCOUNT_UNAVAILABLE (what a start deadline that passed says), instead of
    letting them hold their tokens until then. Returns the ids failed.

    For the caller that just removed the last own account serving ``modes``, inside its
    transaction and after locking the organization's row (the submit's lock: an ``own`` task
    accepted before it is seen here, one accepted after it is refused). Each goes through
    ``task_fail``: the ledger releases the hold, the outbox gets ``task.failed``, the task
    table's trigger keeps the unfinished count. Tasks already assigned or running, ``MODAL``
    ones (they hold nothing yet; their second step is refused) and ``own_then_shared`` ones
    (the shared pool can still run them) are left alone — an assigned one that meets a
    temporary upstream error is failed by the lifecycle instead of being requeued
    (``lifecycle._requeue``, under the same lock). ``reason`` may name ``{mode}``; the default
    (``lifecycle.OWN_ACCOUNT_GONE_REASON``) is the lifecycle's, so both say the same."""
    wanted = sorted(set(modes))
    if not wanted:
        return []
    queued = (
        Task.objects.filter(
            organization_id=organization_id,
            status=Status.NOT_START,
            pool=Pool.OWN,
            mode__in=wanted,
        )
        .order_by("submitted_at", "pk")
        .values_list("pk", "mode")
    )
    failed = []
    for task_id, mode in queued:
        if task_fail(
            task_id=task_id,
            reason=reason.format(mode=mode),
            error_code=ErrorCode.ACCOUNT_UNAVAILABLE,
            from_statuses=(Status.NOT_START,),
        ):
            failed.append(task_id)
    return failed
