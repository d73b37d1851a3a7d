"""Issue 19: tasks whose only problem was a broker outage are re-driven, not timed out; and a
job that is slow to process never cools its account down."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings

from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.models import Health, UpstreamAccount
from apps.engines.sandbox import engine as sandbox_engine
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import POLL_CRASHES, SWEEP_MARK, task_start
from apps.tasks.models import SweepMark, Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.submit import task_submit

from .helpers import poll_step, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def captures(task_id: str) -> int:
    return LedgerEntry.objects.filter(task_id=task_id, kind=EntryKind.CAPTURE).count()


def in_flight(caller, clock, sent) -> tuple[Task, Task, Task]:
    """Three tasks when the broker goes down: one running (its next poll message is lost),
    one assigned (its start message is lost), one still queued."""
    sandbox_account(concurrency=2, duration="0")
    running = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    assigned = task_submit(caller=caller, action=Action.IMAGINE, prompt="a blue fox").task
    queued = task_submit(caller=caller, action=Action.IMAGINE, prompt="a green fox").task
    dispatch_pending()
    task_start(task_id=running.pk)
    tasks_sweep()  # the sweeper ran just before the outage: its mark says when
    sent.clear()
    return (
        Task.objects.get(pk=running.pk),
        Task.objects.get(pk=assigned.pk),
        Task.objects.get(pk=queued.pk),
    )


def test_after_a_broker_outage_tasks_are_re_driven_and_succeed_not_time_out(caller, clock, sent):
    running, assigned, queued = in_flight(caller, clock, sent)
    assert (running.status, assigned.status, queued.status) == (
        Status.IN_PROGRESS,
        Status.SUBMITTED,
        Status.NOT_START,
    )
    deadline = running.run_deadline
    # Twenty minutes without beat, workers or messages: past every run and start deadline.
    outage = timedelta(minutes=20)
    assert running.run_deadline < clock.now + outage
    assert queued.start_deadline < clock.now + outage
    clock.advance(seconds=outage.total_seconds())

    report = tasks_sweep()  # the first sweep after the broker came back
    assert (report["timeout"], report["start_deadline"]) == (0, 0)
    assert report["redriven"] == 2  # the running and the assigned task
    running = Task.objects.get(pk=running.pk)
    lost = outage - timedelta(seconds=settings.TASK_SWEEP_INTERVAL)
    assert running.run_deadline == deadline + lost
    assert running.status == Status.IN_PROGRESS
    # The lost messages are sent again: a new poll chain, the start once more.
    assert ("poll", running.pk, running.poll_token) in sent
    assert ("start", assigned.pk) in sent
    assert SweepMark.objects.get(name=SWEEP_MARK).at == clock.now

    for task in (running, assigned, queued):
        done = run_to_completion(task.pk)
        assert (done.status, done.error_code) == (Status.SUCCESS, "")
        assert captures(task.pk) == 1


def test_a_poll_step_after_an_outage_leaves_the_deadline_to_the_sweeper(caller, clock, sent):
    running, _, _ = in_flight(caller, clock, sent)
    clock.advance(minutes=20)
    running = poll_step(running.pk, running.poll_token)  # a redelivered message runs first
    assert running.status == Status.SUCCESS  # the job was done; nothing timed it out


def test_without_an_outage_a_task_past_its_deadline_still_times_out(caller, clock, sent):
    sandbox_account(duration="5", stall="true")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()
    task_start(task_id=task.pk)
    run_timeout = Task.objects.get(pk=task.pk).upstream_account.run_timeout_seconds
    # The sweeper runs every interval all along; the task is simply stuck upstream.
    for _ in range(int(run_timeout // settings.TASK_SWEEP_INTERVAL) + 2):
        clock.advance(seconds=settings.TASK_SWEEP_INTERVAL)
        tasks_sweep()
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)


def test_a_job_slow_to_process_does_not_cool_its_account_down(caller, sent, settings, monkeypatch):
    account = sandbox_account(duration="0")
    settings.TASK_JOB_TIME_BUDGET = 0.2
    real_render = sandbox_engine.render_result
    slow = {"on": True}

    def render(job):
        if slow["on"]:
            time.sleep(5)  # cut short by the job's budget
        return real_render(job)

    monkeypatch.setattr(sandbox_engine, "render_result", render)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()
    task_start(task_id=task.pk)
    started = time.monotonic()
    task = poll_step(task.pk)
    assert time.monotonic() - started < 4  # stopped by the budget, not by the render's end
    assert task.status == Status.IN_PROGRESS
    assert task.engine_state[POLL_CRASHES] == 1  # the job's own failure count …
    account = UpstreamAccount.objects.get(pk=account.pk)
    assert (account.health, account.consecutive_failures) == (Health.HEALTHY, 0)  # … not its

    slow["on"] = False
    settings.TASK_JOB_TIME_BUDGET = 60  # a loaded test machine renders slowly too
    task = poll_step(task.pk)
    assert task.status == Status.SUCCESS
