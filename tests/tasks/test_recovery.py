"""Deadlines, timeouts and the sweeper's recovery paths, on a frozen clock (SPEC §5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.base import (
    PermanentEngineError,
    SubmitOutcomeUnknown,
    TemporaryEngineError,
)
from apps.engines.models import Health, SandboxJob, UpstreamAccount
from apps.tasks.enums import Action, ErrorCode, Mode, Status
from apps.tasks.lifecycle import (
    COOLDOWN,
    COOLDOWN_AFTER_FAILURES,
    INTERRUPTED_SUBMITS,
    MAX_INTERRUPTED_SUBMITS,
    MAX_START_ATTEMPTS,
    MAX_UNKNOWN_OUTCOME_DELAY,
    task_poll,
    task_start,
)
from apps.tasks.models import Task
from apps.tasks.scheduling import MODAL_EXPIRY, dispatch_pending, tasks_sweep
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit

from .helpers import button_id, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


class WorkerDied(BaseException):
    """Stands for SIGKILL: nothing after it in the worker runs, no handler catches it."""


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


def released(task: Task) -> None:
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance_get(organization=task.organization).held == 0


# --- run timeout and start deadline ----------------------------------------------------------


def test_a_stalled_job_fails_with_timeout_at_the_run_timeout(caller, clock, sent):
    sandbox_account(stall="true")
    UpstreamAccount.objects.update(run_timeout_seconds=90)
    dispatched_at = clock.now
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task = Task.objects.get(pk=task.pk)
    assert task.run_deadline == dispatched_at + timedelta(seconds=90)
    task_start(task_id=task.pk)

    # It reports progress but never finishes; one tick before the deadline it still runs.
    clock.advance(seconds=89.999)
    task_poll(task_id=task.pk, token=Task.objects.get(pk=task.pk).poll_token)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.progress) == (Status.IN_PROGRESS, 42)
    assert tasks_sweep()["timeout"] == 0

    clock.advance(seconds=0.001)
    task_poll(task_id=task.pk, token=task.poll_token)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)
    assert task.fail_reason == "The task did not finish within its run timeout of 90 seconds."
    assert task.finished_at == clock.now
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    released(task)


def test_the_sweeper_times_out_a_task_whose_poll_chain_is_gone(caller, clock, sent):
    sandbox_account(stall="true")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    clock.advance(seconds=600)
    assert tasks_sweep()["timeout"] == 0
    clock.advance(seconds=0.001)
    report = tasks_sweep()
    assert report["timeout"] == 1
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)
    released(task)


def test_without_an_account_for_its_mode_a_task_fails_at_the_start_deadline(
    caller, clock, settings, sent
):
    settings.TASK_START_DEADLINE = timedelta(seconds=120)
    sandbox_account(modes="FAST")
    accepted_at = clock.now
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox --relax").task
    assert task.status == Status.NOT_START
    assert task.start_deadline == accepted_at + timedelta(seconds=120)
    assert balance_get(organization=task.organization).held == 7000

    clock.advance(seconds=120)
    assert tasks_sweep()["start_deadline"] == 0
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    clock.advance(seconds=0.001)
    assert tasks_sweep()["start_deadline"] == 1
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.ACCOUNT_UNAVAILABLE)
    assert task.fail_reason == (
        "No upstream account could start this task before its start deadline."
    )
    released(task)


def test_a_task_whose_account_is_disabled_waits_then_fails_at_the_start_deadline(
    caller, clock, sent
):
    account = sandbox_account()
    UpstreamAccount.objects.filter(pk=account.pk).update(is_enabled=False)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    assert task.status == Status.NOT_START
    clock.advance(seconds=settings.TASK_START_DEADLINE.total_seconds() + 1)
    tasks_sweep()
    task = Task.objects.get(pk=task.pk)
    assert task.error_code == ErrorCode.ACCOUNT_UNAVAILABLE
    released(task)


def test_unfinished_modal_tasks_are_cancelled_after_a_day(caller, clock, sent):
    sandbox_account()
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task.pk
    )
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1")).task.pk
    )
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    clock.advance(seconds=MODAL_EXPIRY.total_seconds() - 1)
    assert tasks_sweep()["modal_expired"] == 0
    clock.advance(seconds=2)
    assert tasks_sweep()["modal_expired"] == 1
    modal = Task.objects.get(pk=modal.pk)
    assert (modal.status, modal.error_code) == (Status.CANCEL, ErrorCode.CANCELLED)
    assert kinds(modal.pk) == []


# --- lost messages and dead workers ----------------------------------------------------------


def test_a_lost_start_message_is_sent_again_after_the_start_lease(caller, clock, sent):
    sandbox_account()
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    assert ("start", task.pk) in sent
    sent.clear()
    clock.advance(seconds=settings.TASK_LEASE_GRACE - 1)
    assert tasks_sweep()["restarted"] == 0
    assert sent == []
    clock.advance(seconds=2)
    assert tasks_sweep()["restarted"] == 1
    assert ("start", task.pk) in sent
    # Both messages arrive: the first claims the submit, the second does nothing.
    task_start(task_id=task.pk)
    task_start(task_id=task.pk)
    assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1


def _die_after_the_upstream_accepted(monkeypatch, engine_class) -> None:
    real_submit = engine_class.submit

    def submit(self, job):
        real_submit(self, job)
        raise WorkerDied

    monkeypatch.setattr(engine_class, "submit", submit)


def test_a_submit_interrupted_after_the_upstream_accepted_is_resumed_not_repeated(
    caller, clock, sent, monkeypatch
):
    from apps.engines.sandbox.engine import SandboxEngine

    sandbox_account(duration="0")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    with monkeypatch.context() as patch:
        _die_after_the_upstream_accepted(patch, SandboxEngine)
        with pytest.raises(WorkerDied):
            task_start(task_id=task.pk)
    job = SandboxJob.objects.get(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.upstream_job_id) == (Status.SUBMITTED, "")
    assert task.submit_claimed_at == clock.now

    # The claim is respected for longer than the hard time limit: a slow submit is not doubled.
    clock.advance(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_LEASE_GRACE - 1)
    report = tasks_sweep()
    assert report["resumed"] == 0
    clock.advance(seconds=2)
    sent.clear()
    report = tasks_sweep()
    assert report["resumed"] == 1
    assert sent == [("start", task.pk)]
    assert Task.objects.get(pk=task.pk).engine_state == {INTERRUPTED_SUBMITS: 1}

    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.upstream_job_id) == (Status.IN_PROGRESS, job.job_id)
    assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1
    assert run_to_completion(task.pk).status == Status.SUCCESS
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]


def test_a_submit_interrupted_before_the_upstream_got_it_is_submitted_once(
    caller, clock, sent, scripted, scripted_account
):
    scripted.script = [WorkerDied()]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    with pytest.raises(WorkerDied):
        task_start(task_id=task.pk)
    assert SandboxJob.objects.count() == 0
    clock.advance(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_LEASE_GRACE + 1)
    assert tasks_sweep()["resumed"] == 1
    task_start(task_id=task.pk)
    assert scripted.submits == 2
    assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS


def test_an_upstream_that_cannot_find_jobs_fails_an_interrupted_submit_without_charge(
    caller, clock, sent, scripted, scripted_account, monkeypatch
):
    monkeypatch.setattr(scripted, "idempotent_submit", False)
    scripted.script = [WorkerDied()]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    with pytest.raises(WorkerDied):
        task_start(task_id=task.pk)
    clock.advance(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_LEASE_GRACE + 1)
    assert tasks_sweep()["lost"] == 1
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.WORKER_LOST)
    released(task)
    assert scripted.submits == 1


# --- engine errors ---------------------------------------------------------------------------


def test_temporary_errors_requeue_cool_the_account_down_and_finally_fail(
    caller, clock, sent, scripted, scripted_account
):
    scripted.script = [TemporaryEngineError("The upstream is busy.")] * MAX_START_ATTEMPTS
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker

    for attempt in range(1, COOLDOWN_AFTER_FAILURES + 1):
        assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED
        task_start(task_id=task.pk)
        task = Task.objects.get(pk=task.pk)
        # Back in the queue, assigned to nobody, attempts counted.
        assert (task.status, task.attempts, task.upstream_account_id) == (
            Status.NOT_START,
            attempt,
            None,
        )
        assert ("dispatch",) in sent
        dispatch_pending()
    account = UpstreamAccount.objects.get(pk=scripted_account.pk)
    assert account.health == Health.COOLING_DOWN
    assert account.consecutive_failures == COOLDOWN_AFTER_FAILURES
    assert account.cooldown_until == clock.now + COOLDOWN
    assert account.last_error == "The upstream is busy."
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START  # nobody to run it now

    # The cooldown ends: the account is usable again at once, before the sweeper says so.
    clock.advance(seconds=COOLDOWN.total_seconds())
    assert dispatch_pending().assigned == [task.pk]
    task_start(task_id=task.pk)  # fails again: a new cooldown starts right away
    account = UpstreamAccount.objects.get(pk=scripted_account.pk)
    assert (account.health, account.cooldown_until) == (
        Health.COOLING_DOWN,
        clock.now + COOLDOWN,
    )
    clock.advance(seconds=COOLDOWN.total_seconds())
    tasks_sweep()  # marks it healthy and dispatches
    assert UpstreamAccount.objects.get(pk=scripted_account.pk).health == Health.HEALTHY
    task_start(task_id=task.pk)  # the fifth temporary error is the last
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code, task.fail_reason) == (
        Status.FAILURE,
        ErrorCode.UPSTREAM_ERROR,
        "The upstream is busy.",
    )
    assert scripted.submits == MAX_START_ATTEMPTS
    released(task)


def test_a_success_resets_the_failure_count(caller, sent, scripted, scripted_account):
    scripted.script = [TemporaryEngineError("Busy.")]
    task = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    assert UpstreamAccount.objects.get(pk=scripted_account.pk).consecutive_failures == 1
    assert run_to_completion(task.pk).status == Status.SUCCESS
    account = UpstreamAccount.objects.get(pk=scripted_account.pk)
    assert (account.consecutive_failures, account.total_succeeded, account.total_submitted) == (
        0,
        1,
        1,
    )


def test_a_permanent_error_fails_the_task_with_its_code(caller, sent, scripted, scripted_account):
    scripted.script = [
        PermanentEngineError("The upstream refused the prompt.", error_code="BANNED_PROMPT")
    ]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code, task.fail_reason) == (
        Status.FAILURE,
        ErrorCode.BANNED_PROMPT,
        "The upstream refused the prompt.",
    )
    released(task)


def test_an_unexpected_submit_error_fails_the_task_without_charge(
    caller, sent, scripted, scripted_account
):
    scripted.script = [KeyError("surprise")]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.INTERNAL_ERROR)
    assert task.fail_reason == (
        "The task could not be sent to the upstream because of an internal error."
    )
    released(task)


def test_an_unknown_submit_outcome_is_looked_up_before_submitting_again(
    caller, sent, scripted, scripted_account
):
    outcome_unknown = SubmitOutcomeUnknown("The upstream did not answer in time.")

    def lose_the_answer(task: Task) -> None:
        from apps.engines.sandbox.engine import SandboxEngine

        SandboxEngine.submit(scripted, scripted.job)
        raise outcome_unknown

    scripted.script = [lose_the_answer]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    sent.clear()
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.SUBMITTED
    assert task.submit_claimed_at is None
    assert task.engine_state == {INTERRUPTED_SUBMITS: 1}
    assert sent == [("start", task.pk)]
    task_start(task_id=task.pk)  # finds the job the lost answer was about
    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.IN_PROGRESS
    assert scripted.submits == 1
    assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1


def test_unknown_submit_outcomes_are_looked_up_with_back_off_past_the_start_attempts(
    caller, sent, scripted, scripted_account
):
    """An engine that can find its jobs says "unknown" while the answer may still come (the
    discord engine waits two minutes for an acknowledgement): the look-ups back off, the
    start lease covers each wait (a sweep must not re-send the start early and burn the
    look-ups), and they outlast the five start attempts before the task fails unpaid."""
    unknown = SubmitOutcomeUnknown("The upstream did not answer in time.")
    scripted.script = [unknown] * MAX_INTERRUPTED_SUBMITS
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    for n in range(1, MAX_INTERRUPTED_SUBMITS):
        started = timezone.now()
        task_start(task_id=task.pk)
        task = Task.objects.get(pk=task.pk)
        assert (task.status, task.engine_state) == (Status.SUBMITTED, {INTERRUPTED_SUBMITS: n})
        wait = min(settings.TASK_POLL_INTERVAL * 2 ** (n - 1), MAX_UNKNOWN_OUTCOME_DELAY)
        assert (task.lease_expires_at - started).total_seconds() >= wait
    assert MAX_INTERRUPTED_SUBMITS - 1 > MAX_START_ATTEMPTS
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.fail_reason) == (Status.FAILURE, unknown.message)
    assert scripted.submits == MAX_INTERRUPTED_SUBMITS
    released(task)


def test_a_look_up_that_cannot_ask_the_upstream_leaves_the_outcome_unknown(
    caller, sent, scripted, scripted_account, monkeypatch
):
    """An interrupted submit's look-up that cannot reach the upstream (``find_job`` raising a
    temporary error) knows no more than before: the task stays with its account and is looked
    up again, never given back to the queue as not accepted while the first job may run."""
    scripted.script = [SubmitOutcomeUnknown("The upstream did not answer in time.")]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    account = Task.objects.get(pk=task.pk).upstream_account_id

    def unreachable(job):
        raise TemporaryEngineError("The upstream is busy; try again shortly.")

    monkeypatch.setattr(scripted, "find_job", unreachable)
    sent.clear()
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.upstream_account_id) == (Status.SUBMITTED, account)
    assert task.engine_state == {INTERRUPTED_SUBMITS: 2}
    assert sent == [("start", task.pk)]  # a look-up later, after its back-off
    assert scripted.submits == 1  # nothing sent again meanwhile


def test_an_unknown_submit_outcome_fails_when_the_upstream_cannot_find_jobs(
    caller, sent, scripted, scripted_account, monkeypatch
):
    monkeypatch.setattr(scripted, "idempotent_submit", False)
    scripted.script = [SubmitOutcomeUnknown("The upstream did not answer in time.")]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.fail_reason) == (
        Status.FAILURE,
        "The upstream did not answer in time.",
    )
    released(task)


def test_a_job_the_upstream_fails_releases_the_hold(caller, sent):
    sandbox_account(fail_rate="1")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    task = run_to_completion(task.pk)
    assert (task.status, task.error_code, task.fail_reason) == (
        Status.FAILURE,
        ErrorCode.UPSTREAM_REJECTED,
        "The sandbox failed this job as configured (fail_rate).",
    )
    assert task.progress == 0
    assert UpstreamAccount.objects.get().total_failed == 1
    released(task)


def test_a_running_task_whose_account_was_deleted_fails(caller, sent):
    account = sandbox_account(duration="60")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    token = Task.objects.get(pk=task.pk).poll_token
    account.delete()
    task_poll(task_id=task.pk, token=token)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.ACCOUNT_UNAVAILABLE)
    released(task)


def test_a_relax_backlog_does_not_hold_up_fast_tasks(caller, organization, monkeypatch, sent):
    """The dispatch window reads only modes with a free slot (no head-of-line blocking)."""
    from apps.accounts.models import MembershipTier
    from apps.tasks import scheduling

    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    monkeypatch.setattr(scheduling, "DISPATCH_WINDOW", 3)
    sandbox_account("relax", modes="RELAX", concurrency=1)
    relax = [
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a road {n}", mode=Mode.RELAX)
        for n in range(6)
    ]
    dispatch_pending()  # what the dispatch message does on a worker
    assert [Task.objects.get(pk=o.task.pk).status for o in relax].count(Status.NOT_START) == 5
    sandbox_account("fast", modes="FAST", concurrency=1)
    fast = task_submit(caller=caller, action=Action.SHORTEN, prompt="a fast road").task
    dispatch_pending()  # what the dispatch message does on a worker
    assert Task.objects.get(pk=fast.pk).status == Status.SUBMITTED


def test_a_poll_without_an_answer_is_repeated(caller, sent, monkeypatch):
    from apps.engines.sandbox.engine import SandboxEngine

    sandbox_account(duration="60")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    token = Task.objects.get(pk=task.pk).poll_token

    def no_answer(self, job):
        raise SubmitOutcomeUnknown("The upstream did not answer in time.")

    monkeypatch.setattr(SandboxEngine, "poll_status", no_answer)
    sent.clear()
    task_poll(task_id=task.pk, token=token)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    assert sent == [("poll", task.pk, token)]


def test_a_task_of_an_engine_that_is_gone_fails_cleanly(caller, sent, scripted, scripted_account):
    from apps.engines.base import _REGISTRY

    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    del _REGISTRY["scripted"]
    try:
        task_start(task_id=task.pk)
    finally:
        _REGISTRY["scripted"] = scripted
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.INTERNAL_ERROR)
    released(task)


def test_one_task_the_sweeper_cannot_handle_does_not_stop_the_others(
    caller, clock, sent, monkeypatch
):
    from apps.tasks import scheduling

    sandbox_account(stall="true")
    ids = [
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"a long road {n}").task.pk
        for n in range(3)
    ]
    dispatch_pending()  # what the dispatch message does on a worker
    for task_id in ids:
        task_start(task_id=task_id)
    real_timeout = scheduling.task_timeout

    def broken_for_the_first(*, task, due=None):
        if task.pk == ids[0]:
            raise RuntimeError("a broken row")
        return real_timeout(task=task, due=due)

    monkeypatch.setattr(scheduling, "task_timeout", broken_for_the_first)
    clock.advance(seconds=601)
    report = tasks_sweep()
    assert (report["timeout"], report["errors"]) == (2, 1)
    statuses = dict(Task.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert statuses == {
        ids[0]: Status.IN_PROGRESS,
        ids[1]: Status.FAILURE,
        ids[2]: Status.FAILURE,
    }


def test_a_submit_cut_off_by_the_soft_time_limit_is_looked_up_before_retrying(
    caller, sent, scripted, scripted_account
):
    from celery.exceptions import SoftTimeLimitExceeded

    scripted.script = [SoftTimeLimitExceeded()]
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.engine_state) == (Status.SUBMITTED, {INTERRUPTED_SUBMITS: 1})
    task_start(task_id=task.pk)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    assert SandboxJob.objects.get(task_id=task.pk).submit_calls == 1


def test_the_sweeper_stops_at_its_soft_time_limit(caller, clock, sent, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    from apps.tasks import scheduling

    sandbox_account(stall="true")
    task = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)

    def out_of_time(*, task, due=None):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(scheduling, "task_timeout", out_of_time)
    clock.advance(seconds=601)
    with pytest.raises(SoftTimeLimitExceeded):
        tasks_sweep()


def test_a_stalled_task_moved_to_another_account_runs_there_on_a_fresh_job(caller, clock, sent):
    from apps.tasks.services.operator import task_retry_on_another_account

    stalled = sandbox_account("stalled", stall="true")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=task.pk)
    old_job = Task.objects.get(pk=task.pk).upstream_job_id
    healthy = sandbox_account("healthy")

    moved = task_retry_on_another_account(task_id=task.pk)
    assert (moved.account.pk, moved.previous_account_id) == (healthy.pk, stalled.pk)
    assert SandboxJob.objects.get(job_id=old_job).cancelled is True
    task = run_to_completion(task.pk)
    assert (task.status, task.upstream_account_id) == (Status.SUCCESS, healthy.pk)
    assert task.upstream_job_id != old_job
    new_job = SandboxJob.objects.get(job_id=task.upstream_job_id)
    assert (new_job.account_id, new_job.stall, new_job.cancelled) == (healthy.pk, False, False)
    assert kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]
