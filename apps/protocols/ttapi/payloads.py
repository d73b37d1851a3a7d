"""The TTAPI job JSON (SPEC §6.2), used by ``fetch`` and by per-task hooks."""

from __future__ import annotations

from typing import Any

from apps.tasks.buttons import Button, buttons_of
from apps.tasks.enums import Status
from apps.tasks.models import Task

from ..task_fields import (
    epoch_ms,
    queue_estimate,
    result_image_url,
    result_split_urls,
    result_video_urls,
)
from .actions import ttapi_component_name, ttapi_components

PENDING_QUEUE = "PENDING_QUEUE"
ON_QUEUE = "ON_QUEUE"
SUCCESS = "SUCCESS"
FAILED = "FAILED"

JOB_STATUS: dict[str, str] = {
    Status.NOT_START: PENDING_QUEUE,
    Status.MODAL: PENDING_QUEUE,
    Status.SUBMITTED: ON_QUEUE,
    Status.IN_PROGRESS: ON_QUEUE,
    Status.SUCCESS: SUCCESS,
    Status.FAILURE: FAILED,
    Status.CANCEL: FAILED,
}


def ttapi_options(task: Task) -> dict[str, Any]:
    """TTAPI request options kept with the task (``getUImages``, ``timeout``)."""
    options = (task.metadata or {}).get("ttapi")
    return options if isinstance(options, dict) else {}


def action_name(task: Task) -> str:
    """``imagine``, ``describe`` … for new jobs; the TTAPI button name for follow-ups."""
    if task.custom_id:
        try:
            return ttapi_component_name(Button(custom_id=task.custom_id, emoji="", label=""))
        except ValueError:
            pass
    return task.action.lower()


def quota(task: Task) -> int:
    """Tokens charged, as TTAPI reports them in ``quota``: net of an operator's refund of the
    task (``Task.tokens_charged``), so a refunded task reports 0."""
    return task.tokens_charged


def job_data(task: Task) -> dict[str, Any]:
    """TTAPI sends ``progress`` and ``quota`` as strings of digits (``"100"``, ``"2"``): typed
    TTAPI clients declare them so, and a number would not parse into their string field."""
    want_splits = bool(ttapi_options(task).get("getUImages"))
    splits = result_split_urls(task) if want_splits else []
    image = result_image_url(task)
    return {
        "jobId": task.id,
        "action": action_name(task),
        "status": JOB_STATUS.get(task.status, ON_QUEUE),
        "progress": str(100 if task.status == Status.SUCCESS else int(task.progress or 0)),
        "prompt": task.prompt or None,
        "finalPrompt": (task.properties or {}).get("finalPrompt") or task.prompt_en or None,
        "description": task.description or None,
        "cdnImage": image,
        # TTAPI's link to the original; ours is the same stable copy.
        "discordImage": image,
        "images": splits or None,
        # A video job's MP4 clips (its cdnImage is the poster).
        "videoUrls": result_video_urls(task) or None,
        "components": ttapi_components(buttons_of(task.buttons)),
        "seed": str(seed) if (seed := task.seed_known) is not None else None,
        "quota": str(quota(task)),
        "mode": task.mode.lower(),
        "hookUrl": task.notify_hook or None,
        "isTest": task.is_test,
        "failReason": task.fail_reason or None,
        "errorCode": task.error_code or None,
        "submitTime": epoch_ms(task.submitted_at or task.created_at),
        "startTime": epoch_ms(task.started_at),
        "finishTime": epoch_ms(task.finished_at),
    }


def job_json(task: Task) -> dict[str, Any]:
    """``{status, message, jobId, data}``: ``status`` is the job's, as TTAPI's fetch answers.

    A queued job's ``data`` also says where it stands (TTAPI's own job JSON has no field for
    it; the names follow its camelCase): ``queuePosition`` (0: a free slot takes it now, 1:
    next) and ``estimatedStartTime`` (epoch ms; ``selectors.task_queue_estimate``: null while no
    slot may serve it and too little was measured)."""
    data = job_data(task)
    estimate = queue_estimate(task)
    if estimate is not None:
        data["queuePosition"] = estimate.position
        data["estimatedStartTime"] = epoch_ms(estimate.expected_start)
    return {
        "status": data["status"],
        "message": task.fail_reason or "success",
        "jobId": task.id,
        "data": data,
    }
