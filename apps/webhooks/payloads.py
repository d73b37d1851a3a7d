"""What a task looks like in a webhook body.

A task's own hook (``notifyHook`` / ``hookUrl`` / ``webhook_url``) receives the Task JSON of the
dialect the task was created with, because clients of midjourney-proxy and TTAPI parse exactly
that. Each protocol app registers its builder here (``register_task_payload("mjproxy", …)``);
until one does, the native-style builder below is used. Organization endpoints receive the
native Task JSON inside an envelope, whatever protocol created the task.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from apps.tasks.models import Protocol, Task

TaskPayloadBuilder = Callable[[Task], dict[str, Any]]

_BUILDERS: dict[str, TaskPayloadBuilder] = {}


def register_task_payload(protocol: str, builder: TaskPayloadBuilder) -> None:
    """Use ``builder`` for the hook bodies of tasks created through ``protocol``."""
    _BUILDERS[protocol] = builder


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def default_task_payload(task: Task) -> dict[str, Any]:
    """The task's public fields, native style. Never internal engine or account details."""
    return {
        "id": task.id,
        "object": "task",
        "action": task.action,
        "status": task.status,
        "mode": task.mode,
        "is_test": task.is_test,
        "parent": task.parent_id,
        "button": task.custom_id or None,
        "prompt": task.prompt,
        "prompt_en": task.prompt_en,
        "description": task.description,
        "state": task.state,
        "metadata": task.metadata,
        "progress": task.progress,
        "result": task.result,
        "buttons": task.buttons,
        "properties": task.properties,
        "seed": task.seed,
        "fail_reason": task.fail_reason or None,
        "error_code": task.error_code or None,
        "price": task.price,
        "created_at": _iso(task.created_at),
        "submitted_at": _iso(task.submitted_at),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
    }


def task_payload(task: Task, *, protocol: str | None = None) -> dict[str, Any]:
    """The Task JSON for ``protocol`` (default: the protocol that created the task)."""
    builder = _BUILDERS.get(protocol or task.protocol)
    if builder is None:
        builder = _BUILDERS.get(Protocol.NATIVE, default_task_payload)
    return builder(task)


def native_task_payload(task: Task) -> dict[str, Any]:
    return task_payload(task, protocol=Protocol.NATIVE)
