"""Compare-and-set transitions: a terminal task never changes, races have one winner."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from apps.billing.ledger import ledger_capture, ledger_release
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.core.errors import ValidationFailed
from apps.engines.base import PollResult, ResultImage
from apps.engines.models import SandboxJob
from apps.tasks import storage
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import (
    task_fail,
    task_poll,
    task_start,
    task_succeed,
    task_timeout,
)
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.cancel import task_cancel
from apps.tasks.services.submit import task_submit

from .helpers import png_bytes, poll_step, run_to_completion, sandbox_account, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def snapshot(task_id: str) -> tuple[Any, ...]:
    task = Task.objects.get(pk=task_id)
    balance = balance_get(organization=task.organization)
    return (
        task.status,
        task.progress,
        task.result,
        task.buttons,
        task.properties,
        task.fail_reason,
        task.error_code,
        task.finished_at,
        task.poll_token,
        list(LedgerEntry.objects.filter(task_id=task_id).values_list("kind", "delta_held")),
        (balance.available, balance.held),
        stored_files(settings.MEDIA_ROOT),
    )


def kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


def success_outcome() -> PollResult:
    return PollResult(
        status=PollResult.SUCCESS, image=ResultImage(data=png_bytes()), is_grid=True, seed=1
    )


def in_progress(caller, **options: str) -> Task:
    sandbox_account(**options)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


@pytest.mark.parametrize("final", [Status.SUCCESS, Status.FAILURE, Status.CANCEL])
def test_a_terminal_task_never_changes(caller, final, sent):
    task = in_progress(caller, duration="0")
    token = task.poll_token
    if final == Status.SUCCESS:
        poll_step(task.pk, token)
    elif final == Status.FAILURE:
        assert task_fail(task_id=task.pk, reason="Broken.", error_code=ErrorCode.UPSTREAM_ERROR)
    else:
        task_cancel(organization=task.organization, task_id=task.pk)
    assert Task.objects.get(pk=task.pk).status == final
    before = snapshot(task.pk)
    sent.clear()

    assert task_fail(task_id=task.pk, reason="Late.", error_code=ErrorCode.TIMEOUT) is False
    assert (
        task_fail(
            task_id=task.pk,
            reason="Late.",
            error_code=ErrorCode.CANCELLED,
            status=Status.CANCEL,
        )
        is False
    )
    assert task_succeed(task_id=task.pk, outcome=success_outcome()) is False
    assert task_timeout(task=Task.objects.get(pk=task.pk)) is False
    task_poll(task_id=task.pk, token=token)  # a late poll of the old chain
    task_start(task_id=task.pk)
    with pytest.raises(ValidationFailed) as info:
        task_cancel(organization=task.organization, task_id=task.pk)
    assert info.value.message == f"The task already finished with status {final}."
    ledger_capture(task=task)
    ledger_release(task=task)
    tasks_sweep()

    assert snapshot(task.pk) == before
    assert sent == []  # and nothing was scheduled for it


def test_capture_happens_once_and_excludes_a_release(caller):
    task = run_to_completion(in_progress(caller, duration="0").pk)
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]
    first = LedgerEntry.objects.get(task=task, kind=EntryKind.CAPTURE)
    assert ledger_capture(task=task) == first
    assert ledger_release(task=task) == first
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]
    balance = balance_get(organization=task.organization)
    assert (balance.available, balance.held) == (1_000_000 - 14000, 0)


def test_cancel_before_the_worker_starts_it_means_no_upstream_job(caller):
    sandbox_account()
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED
    cancelled = task_cancel(organization=task.organization, task_id=task.pk)
    assert (cancelled.status, cancelled.error_code) == (Status.CANCEL, ErrorCode.CANCELLED)
    assert cancelled.fail_reason == "Cancelled by the customer."
    task_start(task_id=task.pk)  # the start message arrives late
    assert SandboxJob.objects.count() == 0
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance_get(organization=task.organization).held == 0


def test_cancel_while_the_submit_is_in_flight_cancels_the_upstream_job(
    caller, scripted, scripted_account
):
    def cancel_meanwhile(task: Task) -> None:
        task_cancel(organization=task.organization, task_id=task.pk)

    scripted.script = [cancel_meanwhile]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.CANCEL
    assert task.upstream_job_id == ""  # never recorded as running
    assert scripted.cancels == [task.pk]
    # The engine was told which job to stop, although the task never recorded it.
    assert scripted.cancelled_jobs == [SandboxJob.objects.get(task_id=task.pk).job_id]
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_an_operator_move_during_the_submit_stops_the_job_left_on_the_old_account(
    caller, scripted, scripted_account
):
    from apps.engines.services import upstream_account_create
    from apps.tasks.services.operator import task_retry_on_another_account

    other = upstream_account_create(
        engine=scripted.name, name="scripted-2", modes=["FAST"], options={"duration": 0}
    )
    moves = []

    def move_meanwhile(task: Task) -> None:
        moves.append(task_retry_on_another_account(task_id=task.pk))

    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    assert Task.objects.get(pk=task.pk).upstream_account_id == scripted_account.pk
    scripted.script = [move_meanwhile]
    task_start(task_id=task.pk)
    assert moves[0].account.pk == other.pk
    task = Task.objects.get(pk=task.pk)
    # The task now waits for a start on the new account; the old worker recorded nothing …
    assert (task.status, task.upstream_account_id) == (Status.SUBMITTED, other.pk)
    assert task.submit_claimed_at is None and task.upstream_job_id == ""
    # … and the job it had already created on the old account was stopped, not orphaned.
    assert scripted.cancels == [task.pk]
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    assert kinds(task.pk) == [EntryKind.HOLD]


def test_cancel_of_a_running_task_stops_the_upstream_job(caller, sent):
    task = in_progress(caller, duration="60")
    token = task.poll_token
    task_cancel(organization=task.organization, task_id=task.pk)
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    sent.clear()
    task_poll(task_id=task.pk, token=token)
    assert Task.objects.get(pk=task.pk).status == Status.CANCEL
    assert sent == []
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_cancel_of_a_modal_task_moves_no_money(caller):
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    from apps.tasks.services.press import task_press

    from .helpers import button_id

    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1")).task.pk
    )
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    cancelled = task_cancel(organization=modal.organization, task_id=modal.pk)
    assert cancelled.status == Status.CANCEL
    assert kinds(modal.pk) == []


def test_timeout_wins_over_a_success_that_was_still_storing_files(caller, monkeypatch):
    task = in_progress(caller, duration="0")
    real_store = storage.store_result
    stored: list[dict[str, Any]] = []

    def store_then_lose_the_race(**kwargs: Any) -> dict[str, Any]:
        result = real_store(**kwargs)
        stored.append(result)
        assert task_timeout(task=Task.objects.get(pk=task.pk)) is True
        return result

    monkeypatch.setattr(storage, "store_result", store_then_lose_the_race)
    files_before = stored_files(settings.MEDIA_ROOT)
    poll_step(task.pk, task.poll_token)

    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)
    assert task.result == {}
    assert len(stored) == 1
    # The loser's files are gone again; the winner settled the money.
    assert stored_files(settings.MEDIA_ROOT) == files_before
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_success_wins_over_a_late_timeout(caller):
    task = in_progress(caller, duration="0")
    stale = Task.objects.get(pk=task.pk)
    poll_step(task.pk, task.poll_token)
    assert task_timeout(task=stale) is False
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.SUCCESS
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]


def test_a_superseded_poll_chain_stops_and_only_the_new_one_continues(caller, sent, clock):
    task = in_progress(caller, duration="60")
    old = task.poll_token
    assert sent[-1] == ("poll", task.pk, old)

    # The worker died: the lease runs out and the sweeper starts a new chain.
    clock.advance(seconds=settings.TASK_POLL_INTERVAL * 3 + settings.TASK_LEASE_GRACE + 1)
    sent.clear()
    report = tasks_sweep()
    assert report["restarted"] == 1
    new = Task.objects.get(pk=task.pk).poll_token
    assert new != old
    assert sent == [("poll", task.pk, new)]

    # The old chain wakes up after all: it neither records anything nor schedules itself.
    sent.clear()
    task_poll(task_id=task.pk, token=old)
    assert sent == []
    task_poll(task_id=task.pk, token=new)
    assert sent == [("poll", task.pk, new)]
    assert Task.objects.get(pk=task.pk).progress > 0


def test_the_sweeper_leaves_a_live_poll_chain_alone(caller, sent, clock):
    task = in_progress(caller, duration="60")
    clock.advance(seconds=settings.TASK_POLL_INTERVAL * 3 + settings.TASK_LEASE_GRACE - 1)
    sent.clear()
    assert tasks_sweep()["restarted"] == 0
    assert Task.objects.get(pk=task.pk).poll_token == task.poll_token
    assert sent == []


def test_progress_only_moves_forward(caller, monkeypatch):
    task = in_progress(caller, duration="60")
    reports = iter([60, 40, 80])

    def poll(self, job):
        return PollResult(status=PollResult.RUNNING, progress=next(reports))

    from apps.engines.sandbox.engine import SandboxEngine

    monkeypatch.setattr(SandboxEngine, "poll_status", poll)
    seen = []
    for _ in range(3):
        task_poll(task_id=task.pk, token=task.poll_token)
        seen.append(Task.objects.get(pk=task.pk).progress)
    assert seen == [60, 60, 80]


def test_dispatch_never_fills_more_slots_than_an_account_has(caller):
    sandbox_account(concurrency=1)
    task = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road").task
    dispatch_pending()  # what the dispatch message does on a worker
    queued = task_submit(caller=caller, action=Action.SHORTEN, prompt="another road").task
    assert dispatch_pending().assigned == []
    assert Task.objects.get(pk=queued.pk).status == Status.NOT_START
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED


def test_a_broken_broker_does_not_fail_the_submit(
    caller, monkeypatch, django_capture_on_commit_callbacks
):
    """Messages go out after commit with robust=True: the beat safety net covers a lost one."""
    from apps.tasks import workers as celery_tasks

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(celery_tasks.dispatch, "apply_async", broken)
    monkeypatch.setattr(celery_tasks.start_job, "apply_async", broken)
    sandbox_account()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outcome = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road")
    assert len(callbacks) == 1  # the dispatch message was attempted (and failed)
    assert outcome.result == SubmitOutcome.STARTED  # a free slot waits for it
    assert Task.objects.get(pk=outcome.task.pk).status == Status.NOT_START
    assert kinds(outcome.task.pk) == [EntryKind.HOLD]
    # The beat safety net's dispatch pass still starts it; its start message fails too,
    # and the sweeper re-sends it after the start lease.
    with django_capture_on_commit_callbacks(execute=True):
        dispatch_pending()
    assert Task.objects.get(pk=outcome.task.pk).status == Status.SUBMITTED
