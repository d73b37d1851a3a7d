"""News from a worker whose task moved on meanwhile changes nothing.

An operator may move a stuck task to another account ("retry on another account") while a
worker is still talking to the old one: a poll step already inside the engine, a submit about
to fail, a sweeper that saw the old run deadline pass. Whatever they conclude is about the old
job, so it must not finish, fail or time out the task's new run on the new account.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.base import PermanentEngineError, PollResult, ResultImage
from apps.engines.models import UpstreamAccount
from apps.engines.sandbox.engine import SandboxEngine
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import task_start, task_timeout
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.operator import task_retry_on_another_account
from apps.tasks.services.submit import task_submit

from .helpers import png_bytes, poll_step, sandbox_account, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


def running_on_first_of_two(caller) -> tuple[Task, UpstreamAccount, UpstreamAccount]:
    first = sandbox_account("sandbox-a", duration="60")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    second = sandbox_account("sandbox-b", duration="60")
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.upstream_account_id) == (Status.IN_PROGRESS, first.pk)
    return task, first, second


def assert_moved_and_untouched(task_id: str, account: UpstreamAccount) -> None:
    task = Task.objects.get(pk=task_id)
    assert (task.status, task.upstream_account_id) == (Status.SUBMITTED, account.pk)
    assert (task.progress, task.result, task.buttons, task.error_code) == (0, {}, [], "")
    assert task.finished_at is None
    assert kinds(task_id) == [EntryKind.HOLD]
    assert balance_get(organization=task.organization).held == task.price


@pytest.mark.parametrize(
    "news",
    [
        PollResult(
            status=PollResult.SUCCESS, image=ResultImage(data=png_bytes()), is_grid=True, seed=7
        ),
        PollResult(status=PollResult.FAILURE, fail_reason="Cancelled upstream."),
        PermanentEngineError("The job vanished upstream."),
    ],
    ids=["success", "failure", "permanent-error"],
)
def test_a_poll_step_overtaken_by_an_operator_move_changes_nothing(
    caller, sent, monkeypatch, news: Any
):
    task, _first, second = running_on_first_of_two(caller)
    files_before = stored_files(settings.MEDIA_ROOT)

    def move_while_asking(self, job):
        task_retry_on_another_account(task_id=job.task_id)  # the operator, meanwhile
        if isinstance(news, Exception):
            raise news
        return news

    monkeypatch.setattr(SandboxEngine, "poll_status", move_while_asking)
    sent.clear()
    poll_step(task.pk, task.poll_token)

    assert_moved_and_untouched(task.pk, second)
    assert stored_files(settings.MEDIA_ROOT) == files_before  # a lost race leaves no files
    assert sent == [("start", task.pk)]  # the move's start, no poll of the old chain


def test_a_sweeper_that_saw_the_old_deadline_pass_does_not_time_out_the_moved_task(
    caller, clock, sent
):
    task, _first, second = running_on_first_of_two(caller)
    clock.advance(seconds=601)
    seen_by_the_sweeper = Task.objects.select_related("upstream_account").get(pk=task.pk)
    assert seen_by_the_sweeper.run_deadline < clock.now
    task_retry_on_another_account(task_id=task.pk)  # the operator, meanwhile

    assert task_timeout(task=seen_by_the_sweeper, due=clock.now) is False
    assert_moved_and_untouched(task.pk, second)


def test_a_submit_error_after_an_operator_move_does_not_fail_the_moved_task(
    caller, scripted, scripted_account, sent
):
    from apps.engines.services import upstream_account_create

    other = upstream_account_create(
        engine=scripted.name, name="scripted-2", modes=["FAST"], options={"duration": 0}
    )

    def move_then_reject(task: Task) -> None:
        task_retry_on_another_account(task_id=task.pk)  # the operator, meanwhile
        raise PermanentEngineError("Rejected by the old account.")

    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    scripted.script = [move_then_reject]
    task_start(task_id=task.pk)
    assert_moved_and_untouched(task.pk, other)

    # The new account's start then runs the task normally.
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.upstream_account_id) == (Status.IN_PROGRESS, other.pk)


def test_a_task_whose_deadline_passed_still_times_out(caller, clock, sent):
    task, first, _second = running_on_first_of_two(caller)
    clock.advance(seconds=601)
    poll_step(task.pk, task.poll_token)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)
    assert task.upstream_account_id == first.pk
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
