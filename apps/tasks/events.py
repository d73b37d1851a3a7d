"""Where task changes leave the domain: webhook outbox rows, written in the same transaction.

The outbox (``apps.webhooks``) is a leaf that knows nothing of tasks, so this side decides what
a change means: it re-reads the task under its row lock, names the event and hands the outbox
the builders of the two bodies. A task's own hook receives the Task JSON of the dialect that
created the task (SPEC §7); organization endpoints receive the native Task JSON. The protocol
apps register those builders here at start-up (``apps.protocols.hooks``), which keeps the
import direction protocols → tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from apps.webhooks.models import EventType, WebhookEndpoint, WebhookEvent
from apps.webhooks.services import task_event_publish

from .enums import Status
from .models import Protocol, Task

TaskPayloadBuilder = Callable[[Task], dict[str, Any]]

_BUILDERS: dict[str, TaskPayloadBuilder] = {}

_STATUS_EVENT_TYPES: dict[str, str] = {
    Status.SUCCESS: EventType.TASK_SUCCEEDED,
    Status.FAILURE: EventType.TASK_FAILED,
    Status.CANCEL: EventType.TASK_CANCELLED,
}


def register_task_payload(protocol: str, builder: TaskPayloadBuilder) -> None:
    """Use ``builder`` for the hook bodies of tasks created through ``protocol``."""
    _BUILDERS[protocol] = builder


def task_payload(task: Task, *, protocol: str | None = None) -> dict[str, Any]:
    """The Task JSON for ``protocol`` (default: the protocol that created the task).

    A dialect without a builder of its own gets the native Task JSON. With no native builder
    registered the protocols app is missing, and publishing fails loudly rather than sending a
    body nobody defined.
    """
    builder = _BUILDERS.get(protocol or task.protocol) or _BUILDERS.get(Protocol.NATIVE)
    if builder is None:
        raise LookupError(
            f"No Task JSON builder is registered for '{protocol or task.protocol}' nor for the "
            "native API; apps.protocols registers them when Django starts."
        )
    return builder(task)


def native_task_payload(task: Task) -> dict[str, Any]:
    return task_payload(task, protocol=Protocol.NATIVE)


def task_changed(
    *,
    task: Task,
    event_type: str | None = None,
    inserted: bool = False,
    locked: bool = False,
    endpoints_none: bool = False,
) -> list[WebhookEvent]:
    """Record that ``task`` changed. Call inside the transaction that changed it.

    The task row is re-read under its lock, so the bodies carry the state this transaction
    commits even when the caller changed it with a queryset ``update()``, and two publishers of
    one task cannot interleave their messages. ``event_type`` defaults from the status.
    ``inserted`` says the caller inserted ``task`` in this transaction from this very instance:
    no other transaction can see the row yet, so it is used as it is (no re-read).
    ``locked`` says the caller changed the row in this transaction (so holds its lock) and read
    ``task`` after that change: it is used as it is too (the hot path of a task's life: its
    assignment, start, progress and end each spare a savepoint and a locked re-read).
    ``endpoints_none``: the caller read in this transaction that the organization has no
    enabled webhook endpoint. Returns the outbox messages written.
    """
    # A task just inserted (or changed) needs no savepoint: a failure here fails the
    # transaction that inserted or changed it, which is what that caller wants (and a
    # statement less per change).
    current = inserted or locked
    with transaction.atomic(savepoint=not current):
        fresh = task if current else Task.objects.select_for_update(of=("self",)).get(pk=task.pk)
        return task_event_publish(
            organization_id=fresh.organization_id,
            task_id=fresh.pk,
            task_status=fresh.status,
            event_type=event_type
            or _STATUS_EVENT_TYPES.get(fresh.status, str(EventType.TASK_UPDATED)),
            hook_url=fresh.notify_hook,
            hook_body=lambda: task_payload(fresh),
            native_body=lambda: native_task_payload(fresh),
            endpoints_none=endpoints_none,
        )


def tasks_changed(
    *, tasks: list[Task], event_type: str, with_endpoints: set[int] | None = None
) -> None:
    """``task_changed(locked=True)`` for a batch the caller changed in this transaction (the
    dispatcher's assignments): which organizations have an enabled webhook endpoint is read
    once for the batch, not once per task (``with_endpoints``: the caller read it in this
    transaction, with the rows)."""
    if not tasks:
        return
    if with_endpoints is None:
        with_endpoints = set(
            WebhookEndpoint.objects.filter(
                organization_id__in={task.organization_id for task in tasks}, is_enabled=True
            ).values_list("organization_id", flat=True)
        )
    for task in tasks:
        task_changed(
            task=task,
            event_type=event_type,
            locked=True,
            endpoints_none=task.organization_id not in with_endpoints,
        )
