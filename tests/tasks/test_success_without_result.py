"""An engine saying "done" without what the action makes (an image action with no image, as a
Discord attachment without a link) fails the task with its hold released: capturing the hold
would sell nothing. Actions whose result is a list of prompts need no image."""

from __future__ import annotations

import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.base import PollResult, ResultImage
from apps.engines.sandbox.engine import SandboxEngine
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.submit import task_submit

from .helpers import poll_step, sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


@pytest.mark.parametrize(
    "image", [None, ResultImage(url=""), ResultImage()], ids=["none", "no-link", "empty"]
)
def test_done_without_an_image_fails_the_task_uncharged(caller, monkeypatch, image):
    sandbox_account(duration="60")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()
    task_start(task_id=task.pk)

    def done_without_image(self, job):
        return PollResult(status=PollResult.SUCCESS, progress=100, image=image)

    monkeypatch.setattr(SandboxEngine, "poll_status", done_without_image)
    failed = poll_step(task.pk)
    assert (failed.status, failed.error_code) == (Status.FAILURE, ErrorCode.UPSTREAM_ERROR)
    assert "gave no result image" in failed.fail_reason
    kinds = list(
        LedgerEntry.objects.filter(task_id=task.pk).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EntryKind.HOLD, EntryKind.RELEASE]
    assert Task.objects.get(pk=task.pk).result == {}
