"""A poll step that crashes (a bug, an answer nobody foresaw) is retried a bounded number of
times, then the task fails with its hold released (instead of being restarted by the sweeper
after every lease until the run timeout)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.models import SandboxJob
from apps.engines.sandbox.engine import SandboxEngine, progress_at
from apps.tasks import storage
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import (
    MAX_POLL_CRASHES,
    POLL_CRASHES,
    _grace,
    task_start,
)
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.submit import task_submit

from .helpers import poll_step, sandbox_account, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


def running(caller, **options: str) -> Task:
    sandbox_account(**options)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.IN_PROGRESS
    return task


def crash_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self, job):
        raise KeyError("an answer nobody foresaw")

    monkeypatch.setattr(SandboxEngine, "poll_status", crash)


def step(task_id: str) -> Task:
    """A poll message and, for a finished job, the results queue's message after it."""
    return poll_step(task_id)


def test_a_poll_step_that_keeps_crashing_fails_the_task_and_releases_its_hold(
    caller, clock, sent, monkeypatch
):
    task = running(caller, duration="60")
    token = task.poll_token
    crash_polls(monkeypatch)
    interval = float(settings.TASK_POLL_INTERVAL)
    for crashes in range(1, MAX_POLL_CRASHES):
        sent.clear()
        task = step(task.pk)
        assert task.status == Status.IN_PROGRESS
        assert task.engine_state[POLL_CRASHES] == crashes
        assert task.poll_token == token
        # Retried with a growing delay; the lease covers it, so the sweeper does not interfere.
        delay = min(interval * 2 ** (crashes - 1), 60.0)
        assert (
            task.lease_expires_at == clock.now + timedelta(seconds=interval * 3 + delay) + _grace()
        )
        assert sent == [("poll", task.pk, token)]
        assert tasks_sweep()["restarted"] == 0
        assert kinds(task.pk) == [EntryKind.HOLD]

    sent.clear()
    task = step(task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.INTERNAL_ERROR)
    assert task.fail_reason == (
        "The task's result could not be processed because of an internal error."
    )
    assert task.finished_at == clock.now
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
    balance = balance_get(organization=task.organization)
    assert (balance.available, balance.held) == (1_000_000, 0)
    # The upstream job was asked to stop, and no further poll was scheduled.
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    assert ("poll", task.pk, token) not in sent


def test_a_normal_answer_ends_the_run_of_crashes(caller, clock, sent, monkeypatch):
    task = running(caller, duration="60")
    real_poll = SandboxEngine.poll_status
    crash_polls(monkeypatch)
    for _ in range(MAX_POLL_CRASHES - 1):
        task = step(task.pk)
    assert task.engine_state[POLL_CRASHES] == MAX_POLL_CRASHES - 1

    monkeypatch.setattr(SandboxEngine, "poll_status", real_poll)
    clock.advance(seconds=30)
    task = step(task.pk)
    assert (task.status, task.progress) == (Status.IN_PROGRESS, progress_at(30, 60))
    assert 0 < task.progress < 100
    assert task.engine_state[POLL_CRASHES] == 0

    crash_polls(monkeypatch)
    task = step(task.pk)
    assert task.status == Status.IN_PROGRESS
    assert task.engine_state[POLL_CRASHES] == 1
    assert kinds(task.pk) == [EntryKind.HOLD]


def test_storage_refusing_the_result_counts_as_a_crash_and_leaves_no_files(
    caller, clock, sent, monkeypatch
):
    task = running(caller, duration="0")
    files_before = stored_files(settings.MEDIA_ROOT)

    def refuse(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "store_result", refuse)
    for crashes in range(1, MAX_POLL_CRASHES):
        task = step(task.pk)
        assert (task.status, task.engine_state[POLL_CRASHES]) == (Status.IN_PROGRESS, crashes)
    task = step(task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.INTERNAL_ERROR)
    assert task.result == {}
    assert stored_files(settings.MEDIA_ROOT) == files_before
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_a_slow_poll_cut_off_by_the_soft_time_limit_is_asked_again_without_counting(
    caller, sent, monkeypatch
):
    from celery.exceptions import SoftTimeLimitExceeded

    task = running(caller, duration="60")

    def slow(self, job):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(SandboxEngine, "poll_status", slow)
    for _ in range(MAX_POLL_CRASHES + 1):
        sent.clear()
        task = step(task.pk)
        assert task.status == Status.IN_PROGRESS
        assert sent == [("poll", task.pk, task.poll_token)]
    assert POLL_CRASHES not in task.engine_state
    assert kinds(task.pk) == [EntryKind.HOLD]
