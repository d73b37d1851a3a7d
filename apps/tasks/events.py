"""Where task changes leave the domain: webhook outbox rows, written in the same transaction."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from functools import cache

from .models import Task


@cache
def _publisher() -> Callable[..., object] | None:
    # The webhooks app is optional until it exists; once it does, an error importing it must
    # surface rather than silently drop every event.
    if importlib.util.find_spec("apps.webhooks.services") is None:
        return None
    module = importlib.import_module("apps.webhooks.services")
    publish: Callable[..., object] = module.task_event_publish
    return publish


def task_changed(*, task: Task, event_type: str) -> None:
    """Record that ``task`` changed. Call inside the transaction that changed it."""
    publish = _publisher()
    if publish is not None:
        publish(task=task, event_type=event_type)
