"""Drive tasks through their lifecycle in-process, without a worker (unit tests)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from apps.engines.models import UpstreamAccount
from apps.tasks.enums import TERMINAL_STATUSES, Status
from apps.tasks.lifecycle import task_finish, task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from tests.factories import UpstreamAccountFactory


def sandbox_account(
    name: str = "sandbox-1",
    *,
    modes: str = "FAST,RELAX,TURBO",
    concurrency: int = 3,
    **options: str,
) -> UpstreamAccount:
    options.setdefault("duration", "0")
    return UpstreamAccountFactory(
        name=name, modes=modes.split(","), concurrency=concurrency, options=options
    )


def png_data_url(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)
) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def poll_step(task_id: str, token: str | None = None) -> Task:
    """One poll message (``task_poll``) and, when it found the job done and freed the slot,
    the results queue's message that stores the result (``task_finish``)."""
    token = token if token is not None else Task.objects.get(pk=task_id).poll_token
    task_poll(task_id=task_id, token=token)
    task = Task.objects.get(pk=task_id)
    if task.status == Status.IN_PROGRESS and task.slot_freed_at and task.poll_token == token:
        task_finish(task_id=task_id, token=token)
        task = Task.objects.get(pk=task_id)
    return task


def run_to_completion(task_id: str, *, max_steps: int = 20) -> Task:
    for _ in range(max_steps):
        task = Task.objects.get(pk=task_id)
        if task.status in TERMINAL_STATUSES:
            return task
        if task.status == Status.NOT_START:
            dispatch_pending()
        elif task.status == Status.SUBMITTED:
            task_start(task_id=task_id)
        elif task.status == Status.IN_PROGRESS and task.slot_freed_at is not None:
            task_finish(task_id=task_id, token=task.poll_token)  # the results queue's step
        elif task.status == Status.IN_PROGRESS:
            task_poll(task_id=task_id, token=task.poll_token)
        else:
            raise AssertionError(f"task {task_id} stuck in {task.status}")
    raise AssertionError(f"task {task_id} did not finish: {Task.objects.get(pk=task_id).status}")


def png_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG claiming ``width`` x ``height`` with a tiny pixel stream (a bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def button_id(task: Task, *, label: str = "", part: str = "") -> str:
    """The id of one of ``task``'s stored buttons, by label or by a part of the id."""
    for candidate in task.buttons:
        if (label and candidate["label"] == label) or (part and part in candidate["custom_id"]):
            return str(candidate["custom_id"])
    raise AssertionError(f"{task.action} {task.pk} has no button {label or part}")


def stored_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


class Clock:
    """A controllable ``timezone.now`` (see the ``clock`` fixture)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def instant_sandbox_pool() -> UpstreamAccount:
    """The built-in pool for test keys, with jobs that finish at once (in-process tests)."""
    from apps.tasks.scheduling import sandbox_pool_ensure

    pool = sandbox_pool_ensure()
    pool.options = {**pool.options, "duration": 0}
    pool.save(update_fields=["options"])
    return pool
