"""Drive mjproxy tasks through the lifecycle in-process, one explicit step at a time."""

from __future__ import annotations

import base64
import io
import socket
from typing import Any

from PIL import Image

from apps.accounts.models import MembershipTier, Organization
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Status
from apps.tasks.lifecycle import task_finish, task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from tests.factories import UpstreamAccountFactory
from tests.fakes.mjproxy_server import FakeMjproxy


def mjproxy_account(
    fake: FakeMjproxy | None,
    name: str = "mj-1",
    *,
    base_url: str | None = None,
    concurrency: int = 3,
    modes: str = "FAST,RELAX,TURBO",
    **options: Any,
) -> UpstreamAccount:
    settings: dict[str, Any] = {"base_url": base_url or (fake.base_url if fake else "")}
    if fake is not None and fake.secret is not None:
        settings["secret"] = fake.secret
    settings.update(options)
    return UpstreamAccountFactory(
        mjproxy=True, name=name, modes=modes.split(","), concurrency=concurrency, options=settings
    )


def closed_port_url() -> str:
    """An address where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def png_bytes(color: tuple[int, int, int] = (10, 120, 200), size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def set_tier(organization: Organization, code: str) -> None:
    organization.tier = MembershipTier.objects.get(code=code)
    organization.save(update_fields=["tier"])


def step(task_id: str) -> str:
    """One lifecycle step for the task's current status; returns the status afterwards."""
    task = Task.objects.get(pk=task_id)
    if task.status == Status.NOT_START:
        dispatch_pending()
    elif task.status == Status.SUBMITTED:
        task_start(task_id=task_id)
    elif task.status == Status.IN_PROGRESS and task.slot_freed_at is not None:
        task_finish(task_id=task_id, token=task.poll_token)  # the results queue's step
    elif task.status == Status.IN_PROGRESS:
        task_poll(task_id=task_id, token=task.poll_token)
    return str(Task.objects.get(pk=task_id).status)


def start(task_id: str) -> Task:
    """Dispatch and submit until the task runs upstream (or ends); returns it."""
    for _ in range(10):
        task = Task.objects.get(pk=task_id)
        if task.status not in (Status.NOT_START, Status.SUBMITTED):
            return task
        step(task_id)
    raise AssertionError(f"task {task_id} did not start: {Task.objects.get(pk=task_id).status}")


def poll(task_id: str) -> Task:
    task = Task.objects.get(pk=task_id)
    assert task.status == Status.IN_PROGRESS, task.status
    task_poll(task_id=task_id, token=task.poll_token)
    return Task.objects.get(pk=task_id)
