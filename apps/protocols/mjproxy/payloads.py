"""The midjourney-proxy Task JSON (SPEC §6.1): every key present, ``null`` where empty.

Fields third-party clients read and show are always filled the way the reference proxies
(novicezk/midjourney-proxy, trueai-org/midjourney-proxy) and relays such as new-api fill them:
``imageUrls`` is a list of ``{"url": …}`` objects, ``description`` is the command the task ran
(``/imagine …``, ``/up <id> U1`` …), ``properties.finalZhPrompt`` is a string, and a DESCRIBE or
SHORTEN result's prompts are in ``prompt`` and ``promptEn`` too.
"""

from __future__ import annotations

from typing import Any

from apps.tasks.buttons import Button, friendly_name
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task

from ..task_fields import (
    epoch_ms,
    queue_estimate,
    result_image_url,
    result_split_urls,
    result_thumbnail_url,
    result_video_urls,
)

#: Actions whose result is text (prompts), copied into ``prompt``/``promptEn`` on success.
_TEXT_RESULT_ACTIONS = (Action.DESCRIBE, Action.SHORTEN)
#: The proxy's short names of the grid buttons in ``/up <id> <name>``.
_SHORT_BUTTON_NAMES = {"REROLL": "R"}


def progress_text(task: Task) -> str:
    """``"NN%"``; ``"100%"`` on success and ``""`` on failure, as the proxy reports them."""
    if task.status == Status.SUCCESS:
        return "100%"
    if task.status in (Status.FAILURE, Status.CANCEL):
        return ""
    return f"{int(task.progress or 0)}%"


def image_urls(task: Task) -> list[dict[str, str]] | None:
    """``[{"url": …}]``: the four splits of a grid, else the single image, else ``null``."""
    splits = result_split_urls(task)
    if splits:
        return [{"url": url} for url in splits]
    main = result_image_url(task)
    return [{"url": main}] if main else None


def video_urls(urls: list[str]) -> list[dict[str, str]] | None:
    """``[{"url": …}]``: a video's MP4 clips as trueai-org's proxy lists them, else ``null``.

    ``imageUrl`` of a video is its poster (the first frame of the first clip)."""
    return [{"url": url} for url in urls] or None


def description_text(task: Task) -> str:
    """The command the task ran, as the proxy describes its tasks; never empty."""
    if task.description:
        return task.description
    if task.parent_id and task.custom_id:
        name = friendly_name(Button(custom_id=task.custom_id, emoji="", label=""))
        return f"/up {task.parent_id} {_SHORT_BUTTON_NAMES.get(name, name)}"
    if task.action == Action.DESCRIBE:
        return f"/describe {task.id}.png"
    if task.action == Action.BLEND:
        return f"/blend {task.id} {len(task.inputs or [])}"
    if task.action == Action.SWAP_FACE:
        return f"/swap_face {task.id}"
    if task.action == Action.VIDEO:
        return f"/video {task.prompt}".rstrip()
    command = "/shorten" if task.action == Action.SHORTEN else "/imagine"
    return f"{command} {task.prompt}".rstrip()


def button_json(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored button as midjourney-proxy spells it: ``custom_id`` becomes ``customId`` in its
    place, every other key as stored, so the answer is the same bytes as before the rename."""
    return {("customId" if key == "custom_id" else key): value for key, value in stored.items()}


def _prompts(task: Task, properties: dict[str, Any]) -> tuple[str | None, str | None]:
    final = properties.get("finalPrompt")
    if task.action in _TEXT_RESULT_ACTIONS and task.status == Status.SUCCESS and final:
        # The reference proxy copies a describe's (and shorten's) prompts into both fields;
        # bots print ``prompt`` and would show "None".
        return str(final), str(final)
    return task.prompt or None, task.prompt_en or None


def task_json(task: Task) -> dict[str, Any]:
    properties = dict(task.properties or {})
    properties.setdefault("finalPrompt", task.prompt_en or None)
    zh_prompt = properties.get("finalZhPrompt")
    properties["finalZhPrompt"] = zh_prompt if isinstance(zh_prompt, str) else ""
    properties["isTest"] = task.is_test
    prompt, prompt_en = _prompts(task, properties)
    videos = result_video_urls(task)
    return {
        "id": task.id,
        "action": task.action,
        "status": task.status,
        "prompt": prompt,
        "promptEn": prompt_en,
        "description": description_text(task),
        "state": task.state,
        "submitTime": epoch_ms(task.submitted_at or task.created_at),
        "startTime": epoch_ms(task.started_at),
        "finishTime": epoch_ms(task.finished_at),
        "progress": progress_text(task),
        "imageUrl": result_image_url(task),
        "imageUrls": image_urls(task),
        # The first clip on its own: clients built on new-api's Midjourney DTO read ``videoUrl``.
        "videoUrl": videos[0] if videos else None,
        "videoUrls": video_urls(videos),
        "thumbnailUrl": result_thumbnail_url(task),
        "failReason": task.fail_reason or None,
        "errorCode": task.error_code or None,
        "mode": task.mode,
        "properties": properties,
        "buttons": [button_json(b) if isinstance(b, dict) else b for b in task.buttons or []],
    }


def queued_task_json(task: Task) -> dict[str, Any]:
    """``task_json``, plus where a queued task stands, as the submit answer said it: tasks
    waiting ahead of it for a slot (``numberOfQueues``) and the expected start
    (``estimatedStartTime``, epoch ms). Fetch, every list and queued-task webhooks show it."""
    body = task_json(task)
    estimate = queue_estimate(task)
    if estimate is not None:
        body["properties"]["numberOfQueues"] = max(estimate.position - 1, 0)
        body["properties"]["estimatedStartTime"] = epoch_ms(estimate.expected_start)
    return body
