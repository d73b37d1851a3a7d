"""Where task changes leave the domain: webhook outbox rows, written in the same transaction."""

from __future__ import annotations

from .models import Task


def task_changed(*, task: Task, event_type: str) -> None:
    """Record that ``task`` changed. Call inside the transaction that changed it."""
    try:
        from apps.webhooks.services import task_event_publish
    except ImportError:  # the webhooks app is optional until it is installed
        return
    task_event_publish(task=task, event_type=event_type)
