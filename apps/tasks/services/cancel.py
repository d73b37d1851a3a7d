"""A customer cancels an unfinished task; its hold is released."""

from __future__ import annotations

import logging

from apps.accounts.models import Organization
from apps.api_keys.models import ApiKey
from apps.core.errors import ValidationFailed

from ..enums import ErrorCode, Status
from ..errors import InputError
from ..lifecycle import NON_TERMINAL, task_cancel_upstream, task_fail
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
