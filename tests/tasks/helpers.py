"""Drive tasks through their lifecycle in-process, without a worker (unit tests)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from apps.engines.models import UpstreamAccount
from apps.engines.services import upstream_account_create
from apps.tasks.enums import TERMINAL_STATUSES, Status
from apps.tasks.lifecycle import task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending


def sandbox_account(
    name: str = "sandbox-1",
    *,
    modes: str = "FAST,RELAX,TURBO",
    concurrency: int = 3,
    **options: str,
) -> UpstreamAccount:
    options.setdefault("duration", "0")
    return upstream_account_create(
        engine="sandbox",
        name=name,
        modes=modes.split(","),
        concurrency=concurrency,
        options=options,
    )


def png_data_url(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)
) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def run_to_completion(task_id: str, *, max_steps: int = 20) -> Task:
    for _ in range(max_steps):
        task = Task.objects.get(pk=task_id)
        if task.status in TERMINAL_STATUSES:
            return task
        if task.status == Status.NOT_START:
            dispatch_pending()
        elif task.status == Status.SUBMITTED:
            task_start(task_id=task_id)
        elif task.status == Status.IN_PROGRESS:
            task_poll(task_id=task_id, token=task.poll_token)
        else:
            raise AssertionError(f"task {task_id} stuck in {task.status}")
    raise AssertionError(f"task {task_id} did not finish: {Task.objects.get(pk=task_id).status}")
