"""The native Task JSON (SPEC §6.3), shared by the API, organization webhooks and task hooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.tasks.buttons import Button, friendly_name
from apps.tasks.models import Task

from ..task_fields import (
    queue_estimate,
    result_image_url,
    result_split_urls,
    result_thumbnail_url,
    result_video_urls,
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def button_json(data: dict[str, Any]) -> dict[str, Any]:
    """A stored button in the native API's shape (a public contract: its keys do not change
    with the stored format), with our alias for it."""
    button = Button.from_dict(data)
    return {
        "customId": button.custom_id,
        "emoji": button.emoji,
        "label": button.label,
        "type": button.type,
        "style": button.style,
        "name": friendly_name(button),
    }


def task_json(task: Task) -> dict[str, Any]:
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
        "description": task.description or None,
        "metadata": task.metadata or {},
        "webhook_url": task.notify_hook or None,
        "progress": 100 if task.status == "SUCCESS" else int(task.progress or 0),
        "image_url": result_image_url(task),
        "image_urls": result_split_urls(task),
        "thumbnail_url": result_thumbnail_url(task),
        # A VIDEO task's MP4 clips; its image_url is their poster (also in poster_url).
        "video_urls": result_video_urls(task),
        "poster_url": result_image_url(task) if (task.result or {}).get("videos") else None,
        "buttons": [button_json(b) for b in task.buttons or []],
        "properties": task.properties or {},
        # Until the job starts only a seed the prompt fixes is known (``known_seed``).
        "seed": task.seed_known,
        "fail_reason": task.fail_reason or None,
        "error_code": task.error_code or None,
        "price": task.price,
        "pool": task.pool,
        "platform_fee": task.own_fee,
        "created_at": _iso(task.created_at),
        "submitted_at": _iso(task.submitted_at),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
    }


def with_queue(body: dict[str, Any], task: Task) -> dict[str, Any]:
    """A queued task's place: ``queue_position`` (0: a free slot takes it now, 1: next) and
    ``expected_start`` (ISO 8601; ``selectors.task_queue_estimate``: null while no slot may serve
    it and too little was measured)."""
    estimate = queue_estimate(task)
    if estimate is not None:
        body["properties"]["queue_position"] = estimate.position
        body["properties"]["expected_start"] = _iso(estimate.expected_start)
    return body


def queued_task_json(task: Task) -> dict[str, Any]:
    """``task_json`` with a queued task's place (webhook bodies)."""
    return with_queue(task_json(task), task)
