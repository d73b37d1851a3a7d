"""The midjourney-proxy Task JSON (SPEC §6.1): every key present, ``null`` where empty."""

from __future__ import annotations

from typing import Any

from apps.tasks.enums import Status
from apps.tasks.models import Task

from ..common import epoch_ms, result_image_url, result_split_urls


def progress_text(task: Task) -> str:
    """``"NN%"``; ``"100%"`` on success and ``""`` on failure, as the proxy reports them."""
    if task.status == Status.SUCCESS:
        return "100%"
    if task.status in (Status.FAILURE, Status.CANCEL):
        return ""
    return f"{int(task.progress or 0)}%"


def image_urls(task: Task) -> list[str] | None:
    splits = result_split_urls(task)
    if splits:
        return splits
    main = result_image_url(task)
    return [main] if main else None


def button_json(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored button as midjourney-proxy spells it: ``custom_id`` becomes ``customId`` in its
    place, every other key as stored, so the answer is the same bytes as before the rename."""
    return {("customId" if key == "custom_id" else key): value for key, value in stored.items()}


def task_json(task: Task) -> dict[str, Any]:
    properties = dict(task.properties or {})
    properties.setdefault("finalPrompt", task.prompt_en or None)
    properties["isTest"] = task.is_test
    return {
        "id": task.id,
        "action": task.action,
        "status": task.status,
        "prompt": task.prompt or None,
        "promptEn": task.prompt_en or None,
        "description": task.description or None,
        "state": task.state,
        "submitTime": epoch_ms(task.submitted_at or task.created_at),
        "startTime": epoch_ms(task.started_at),
        "finishTime": epoch_ms(task.finished_at),
        "progress": progress_text(task),
        "imageUrl": result_image_url(task),
        "imageUrls": image_urls(task),
        "failReason": task.fail_reason or None,
        "errorCode": task.error_code or None,
        "mode": task.mode,
        "properties": properties,
        "buttons": [button_json(b) if isinstance(b, dict) else b for b in task.buttons or []],
    }
