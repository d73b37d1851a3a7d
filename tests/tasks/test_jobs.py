"""The engine boundary, tasks side: engines get a frozen Job; pushed news goes through the
lifecycle (``task_apply_update``) with the same compare-and-set rules as a poll."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.base import _REGISTRY, Job, JobUpdate, PollResult, SubmitResult
from apps.engines.models import SandboxJob, UpstreamAccount
from apps.engines.services import upstream_account_create
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.jobs import job_for
from apps.tasks.lifecycle import UpdateOutcome, task_apply_update, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit

from .conftest import ScriptedEngine
from .helpers import button_id, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


class MutatingEngine(ScriptedEngine):
    """An engine that tries to change the job it was given, then submits it normally."""

    name = "mutating"

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[tuple[str, type[BaseException]]] = []
        self.seen: list[Job] = []

    def submit(self, job: Job) -> SubmitResult:
        self.seen.append(job)
        tries: list[tuple[str, Any]] = [
            ("prompt", lambda: setattr(job, "prompt", "something else")),
            ("status", lambda: setattr(job, "upstream_job_id", "forged")),
            ("params", lambda: operator.setitem(job.params, "index", 4)),
            ("state", lambda: operator.setitem(job.state, "x", 1)),
            ("options", lambda: operator.setitem(job.account.options, "stall", True)),
            ("secrets", lambda: operator.setitem(job.account.secrets, "secret", "")),
        ]
        for what, attempt in tries:
            try:
                attempt()
            except (dataclasses.FrozenInstanceError, TypeError) as exc:
                self.attempts.append((what, type(exc)))
        return super().submit(job)


@pytest.fixture
def mutating() -> Any:
    engine = MutatingEngine()
    _REGISTRY[engine.name] = engine
    yield engine
    del _REGISTRY[engine.name]


def test_an_engine_gets_a_frozen_job_it_cannot_change(caller, mutating, sent):
    upstream_account_create(
        engine=mutating.name, name="mutating-1", modes=["FAST"], options={"duration": 0}
    )
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox --ar 3:2").task
    dispatch_pending()  # what the dispatch message does on a worker
    before = Task.objects.filter(pk=task.pk).values("prompt_en", "params").get()
    task_start(task_id=task.pk)

    (job,) = mutating.seen
    assert isinstance(job, Job)
    assert (job.task_id, job.action, job.prompt) == (task.pk, Action.IMAGINE, before["prompt_en"])
    assert mutating.attempts == [
        ("prompt", dataclasses.FrozenInstanceError),
        ("status", dataclasses.FrozenInstanceError),
        ("params", TypeError),
        ("state", TypeError),
        ("options", TypeError),
        ("secrets", TypeError),
    ]
    running = Task.objects.get(pk=task.pk)
    assert running.status == Status.IN_PROGRESS
    assert running.upstream_job_id == SandboxJob.objects.get(task_id=task.pk).job_id
    assert Task.objects.filter(pk=task.pk).values("prompt_en", "params").get() == before
    assert dict(UpstreamAccount.objects.get(name="mutating-1").options) == {"duration": 0}


def test_a_follow_up_job_carries_its_parent_and_files_read_on_demand(caller, sent):
    account = sandbox_account()
    parent = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    child = task_press(
        caller=caller, parent_id=parent.pk, custom_id=button_id(parent, label="U2")
    ).task
    job = job_for(Task.objects.get(pk=child.pk), account)
    assert job.parent is not None
    assert (job.parent.task_id, job.parent.upstream_job_id) == (parent.pk, parent.upstream_job_id)
    assert (job.parent.engine, job.parent.account_id) == ("sandbox", account.pk)
    assert job.parent.grid is not None and job.parent.grid.name == parent.result["image"]
    assert [f.name for f in job.parent.splits] == parent.result["splits"]
    assert job.parent.grid.read()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [b["custom_id"] for b in job.parent.buttons] == [b["custom_id"] for b in parent.buttons]
    assert job.account.running_jobs() == ()  # nothing of this account runs now


# --- task_apply_update: what engines push ---------------------------------------------------


@pytest.fixture
def running(caller, sent) -> Task:
    sandbox_account(duration="60")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


def _update(task: Task, result: PollResult, **kwargs: Any) -> JobUpdate:
    assert task.upstream_account_id is not None
    return JobUpdate(
        account_id=kwargs.pop("account_id", task.upstream_account_id),
        upstream_job_id=kwargs.pop("upstream_job_id", task.upstream_job_id),
        result=result,
        **kwargs,
    )


def test_failure_news_about_an_earlier_job_of_the_task_leaves_its_current_job_running(running):
    """News found by the task's id (the Discord gateway's: its job rows name their task) about
    another job of the same task on the same account (an earlier one, before a move away and
    back): the task's current job is not failed by it. The guard compared the task's job with
    itself before, so any failure of any job of the task failed it."""
    news = PollResult(status=PollResult.FAILURE, fail_reason="the earlier job failed")
    update = _update(running, news, upstream_job_id="an-earlier-job", task_id=running.pk)
    assert task_apply_update(update=update) == UpdateOutcome.UNCHANGED
    assert Task.objects.get(pk=running.pk).status == Status.IN_PROGRESS
    # News about the job it runs still fails it.
    current = _update(running, news, task_id=running.pk)
    assert task_apply_update(update=current) == UpdateOutcome.FAILED
    assert Task.objects.get(pk=running.pk).status == Status.FAILURE


def test_progress_news_moves_progress_forward_only(running):
    news = PollResult(status=PollResult.RUNNING, progress=40)
    assert task_apply_update(update=_update(running, news)) == UpdateOutcome.PROGRESS
    assert Task.objects.get(pk=running.pk).progress == 40
    older = PollResult(status=PollResult.RUNNING, progress=20)
    assert task_apply_update(update=_update(running, older)) == UpdateOutcome.UNCHANGED
    assert Task.objects.get(pk=running.pk).progress == 40


def test_news_found_by_task_id_when_the_engine_knows_no_job_id(running):
    news = PollResult(status=PollResult.RUNNING, progress=55)
    update = _update(running, news, upstream_job_id="", task_id=running.pk)
    assert task_apply_update(update=update) == UpdateOutcome.PROGRESS
    assert Task.objects.get(pk=running.pk).progress == 55


def test_news_from_another_account_or_about_an_unknown_job_is_ignored(running):
    other = sandbox_account("sandbox-2")
    news = PollResult(status=PollResult.FAILURE, fail_reason="no")
    before = Task.objects.filter(pk=running.pk).values().get()
    for update in (
        _update(running, news, account_id=other.pk),
        _update(running, news, account_id=other.pk, task_id=running.pk),
        _update(running, news, upstream_job_id="not-a-job-of-ours"),
        _update(running, news, upstream_job_id=""),
    ):
        assert task_apply_update(update=update) == UpdateOutcome.IGNORED
    assert Task.objects.filter(pk=running.pk).values().get() == before
    assert kinds(running.pk) == [EntryKind.HOLD]


def test_failure_news_fails_the_task_once_and_releases_its_hold(running):
    news = PollResult(
        status=PollResult.FAILURE, fail_reason="Banned prompt.", error_code=ErrorCode.BANNED_PROMPT
    )
    assert task_apply_update(update=_update(running, news)) == UpdateOutcome.FAILED
    failed = Task.objects.get(pk=running.pk)
    assert (failed.status, failed.fail_reason, failed.error_code) == (
        Status.FAILURE,
        "Banned prompt.",
        ErrorCode.BANNED_PROMPT,
    )
    assert kinds(running.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert UpstreamAccount.objects.get(pk=running.upstream_account_id).total_failed == 1
    assert task_apply_update(update=_update(running, news)) == UpdateOutcome.UNCHANGED
    assert kinds(running.pk) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_success_news_hands_the_result_to_a_worker_poll_step(running, sent):
    sent.clear()
    news = PollResult(status=PollResult.SUCCESS, progress=100)
    assert task_apply_update(update=_update(running, news)) == UpdateOutcome.FINISHING
    woken = Task.objects.get(pk=running.pk)
    assert woken.status == Status.IN_PROGRESS  # the update itself stores nothing
    assert woken.poll_token != running.poll_token
    assert sent == [("poll", running.pk, woken.poll_token)]
    assert kinds(running.pk) == [EntryKind.HOLD]
