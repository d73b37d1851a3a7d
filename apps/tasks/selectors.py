"""Reads of tasks. Every function takes the organization: tenancy fails closed."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Organization
from apps.core.errors import NotFound

from .enums import UNFINISHED_STATUSES, Status
from .models import BannedWord, Task


def task_get(*, organization: Organization, task_id: object) -> Task:
    """A task of this organization. Another tenant's id answers exactly like a missing one."""
    if task_id is None or not str(task_id).strip():
        raise NotFound("Task not found.")
    task = (
        Task.objects.select_related("parent", "upstream_account")
        .filter(organization=organization, pk=str(task_id).strip())
        .first()
    )
    if task is None:
        raise NotFound("Task not found.")
    return task


def task_list(
    *,
    organization: Organization,
    ids: list[str] | None = None,
    statuses: list[str] | None = None,
    actions: list[str] | None = None,
    modes: list[str] | None = None,
    is_test: bool | None = None,
    search: str | None = None,
) -> QuerySet[Task]:
    qs = Task.objects.filter(organization=organization)
    if ids is not None:
        qs = qs.filter(pk__in=[str(i) for i in ids])
    if statuses:
        qs = qs.filter(status__in=statuses)
    if actions:
        qs = qs.filter(action__in=actions)
    if modes:
        qs = qs.filter(mode__in=modes)
    if is_test is not None:
        qs = qs.filter(is_test=is_test)
    if search:
        qs = qs.filter(prompt__icontains=search)
    return qs.order_by("-created_at", "-pk")


def task_unfinished_count(*, organization: Organization) -> int:
    return Task.objects.filter(organization=organization, status__in=UNFINISHED_STATUSES).count()


def task_queue_list(*, organization: Organization) -> QuerySet[Task]:
    """This organization's tasks that are queued or running, oldest first."""
    return Task.objects.filter(organization=organization, status__in=UNFINISHED_STATUSES).order_by(
        "submitted_at", "pk"
    )


def task_queue_position(*, task: Task) -> int:
    """How many queued tasks of the same pool are ahead of this one, plus one.

    The pool is the mode, and live and test tasks queue separately (test keys run on the
    built-in sandbox pool). Other tenants' tasks count: they share the upstream accounts.
    """
    if task.status != Status.NOT_START or task.submitted_at is None:
        return 0
    ahead = Task.objects.filter(
        status=Status.NOT_START,
        mode=task.mode,
        is_test=task.is_test,
        submitted_at__lt=task.submitted_at,
    ).count()
    return ahead + 1


def banned_words_active() -> list[str]:
    return list(BannedWord.objects.filter(is_active=True).values_list("word", flat=True))
