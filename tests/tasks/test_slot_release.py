"""A slot is freed the moment the upstream says a job is done, before its result is made and
stored (on the low-priority results queue); the next queued task starts at once; polls come
when the upstream expects the job to be done, not a fixed interval later."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from apps.billing.models import EntryKind, LedgerEntry
from apps.engines.sandbox import engine as sandbox_engine
from apps.tasks import lifecycle
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import (
    POLL_ETA_SLACK,
    SWEEP_MARK,
    task_finish,
    task_poll,
    task_start,
)
from apps.tasks.models import SweepMark, Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.submit import task_submit

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The lifecycle's messages with their delays, recorded instead of sent (after commit)."""
    from django.db import transaction

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    monkeypatch.setattr(
        lifecycle,
        "send_after_commit",
        lambda name, *args, countdown=None, queue=None, counted_from=None: calls.append(
            (name, *args, countdown)
        ),
    )
    monkeypatch.setattr(lifecycle, "send_now", lambda name, *a, **k: calls.append((name,)))
    return calls


def swept_all_along(now) -> None:
    """The sweeper ran on schedule until ``now`` (no outage to make up for)."""
    SweepMark.objects.update_or_create(name=SWEEP_MARK, defaults={"at": now})


def started(caller, prompt: str = "a red fox") -> Task:
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task
    dispatch_pending()
    task_start(task_id=task.pk)
    return Task.objects.get(pk=task.pk)


def test_the_slot_is_free_before_the_result_is_made_and_the_next_task_starts(
    caller, clock, outbox, monkeypatch
):
    account = sandbox_account(concurrency=1, duration="1")
    first = started(caller)
    second = task_submit(caller=caller, action=Action.IMAGINE, prompt="a blue fox").task
    assert dispatch_pending().assigned == []  # the one slot is taken

    rendered: list[str] = []
    real_render = sandbox_engine.render_result
    monkeypatch.setattr(
        sandbox_engine,
        "render_result",
        lambda job: rendered.append(job.task_id) or real_render(job),
    )
    clock.advance(seconds=1)
    outbox.clear()
    task_poll(task_id=first.pk, token=first.poll_token)

    first = Task.objects.get(pk=first.pk)
    assert first.status == Status.IN_PROGRESS  # the result is not stored yet …
    assert first.slot_freed_at == clock.now  # … but the slot is free
    assert rendered == []  # nothing rendered in the poll step
    assert ("tasks.finish_job", first.pk, first.poll_token, None) in outbox
    assert dispatch_pending().assigned == [second.pk]
    assert Task.objects.get(pk=second.pk).upstream_account_id == account.pk

    task_finish(task_id=first.pk, token=first.poll_token)  # the results queue's step
    first = Task.objects.get(pk=first.pk)
    assert first.status == Status.SUCCESS
    assert rendered == [first.pk]
    assert first.result["image"] and len(first.result["splits"]) == 4
    entries = LedgerEntry.objects.filter(task_id=first.pk).order_by("id")
    kinds = list(entries.values_list("kind", flat=True))
    assert kinds == [EntryKind.HOLD, EntryKind.CAPTURE]


def test_a_duplicate_or_stale_finishing_message_changes_nothing(caller, clock, outbox):
    sandbox_account(duration="0")
    task = started(caller)
    task_poll(task_id=task.pk, token=task.poll_token)
    task_finish(task_id=task.pk, token="not-the-chain")
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    task_finish(task_id=task.pk, token=task.poll_token)
    done = Task.objects.get(pk=task.pk)
    task_finish(task_id=task.pk, token=task.poll_token)  # redelivered
    assert Task.objects.get(pk=task.pk).result == done.result
    assert LedgerEntry.objects.filter(task_id=task.pk, kind=EntryKind.CAPTURE).count() == 1


def test_polls_come_when_the_upstream_expects_the_job_to_be_done(caller, clock, outbox):
    sandbox_account(duration="0.5")
    outbox.clear()
    task = started(caller)
    polls = [m for m in outbox if m[0] == "tasks.poll_job"]
    assert polls == [("tasks.poll_job", task.pk, task.poll_token, 0.5 + POLL_ETA_SLACK)]

    clock.advance(seconds=0.2)  # asked early: the next poll is due when the job is
    outbox.clear()
    task_poll(task_id=task.pk, token=task.poll_token)
    (poll,) = [m for m in outbox if m[0] == "tasks.poll_job"]
    assert poll[-1] == pytest.approx(0.3 + POLL_ETA_SLACK)

    sandbox_account("slow", duration="600")
    assert lifecycle.poll_delay(600) == settings.TASK_POLL_INTERVAL  # never later than usual
    assert lifecycle.poll_delay(None) == settings.TASK_POLL_INTERVAL


def test_a_lost_finishing_message_is_sent_again_by_the_sweeper(caller, clock, outbox):
    sandbox_account(duration="0")
    task = started(caller)
    task_poll(task_id=task.pk, token=task.poll_token)  # the finishing message is lost
    outbox.clear()
    assert tasks_sweep()["restarted"] == 0  # within its lease: maybe just a backlog

    clock.advance(seconds=settings.TASK_FINISH_LEASE + 1)
    assert tasks_sweep()["restarted"] == 1
    new = Task.objects.get(pk=task.pk).poll_token
    assert ("tasks.poll_job", task.pk, new, 0) in outbox
    task_poll(task_id=task.pk, token=new)
    assert ("tasks.finish_job", task.pk, new, None) in outbox
    task_finish(task_id=task.pk, token=new)
    assert Task.objects.get(pk=task.pk).status == Status.SUCCESS


def test_a_job_waiting_for_its_result_to_be_stored_is_not_timed_out_at_its_deadline(
    caller, clock, outbox
):
    account = sandbox_account(duration="0")
    task = started(caller)
    task_poll(task_id=task.pk, token=task.poll_token)
    clock.advance(seconds=account.run_timeout_seconds + 1)
    swept_all_along(clock.now)  # no outage: the deadline really passed
    assert tasks_sweep()["timeout"] == 0
    task_finish(task_id=task.pk, token=Task.objects.get(pk=task.pk).poll_token)
    assert Task.objects.get(pk=task.pk).status == Status.SUCCESS

    # One that never gets its result stored times out in the end (its hold is released).
    other = started(caller, prompt="a green fox")
    task_poll(task_id=other.pk, token=other.poll_token)
    clock.advance(seconds=account.run_timeout_seconds + 2 * settings.TASK_FINISH_LEASE + 1)
    swept_all_along(clock.now)
    tasks_sweep()
    other = Task.objects.get(pk=other.pk)
    assert (other.status, other.error_code) == (Status.FAILURE, ErrorCode.TIMEOUT)


def test_the_worker_that_freed_a_slot_starts_the_next_task_itself(caller, clock, sent):
    """``tasks.poll_job`` (``scheduling.poll_step``): the step frees the slot, then the same
    process dispatches and submits the next queued task, without waiting for another message
    to be picked up."""
    from apps.tasks import workers

    sandbox_account(concurrency=1, duration="1")
    first = started(caller)
    second = task_submit(caller=caller, action=Action.IMAGINE, prompt="a blue fox").task
    assert dispatch_pending().assigned == []
    clock.advance(seconds=1)
    workers.poll_job(first.pk, first.poll_token)
    second = Task.objects.get(pk=second.pk)
    assert second.status == Status.IN_PROGRESS  # claimed and submitted in that same call
    assert second.submit_claimed_at == clock.now
    assert ("start", second.pk) not in sent  # no message for a start done on the spot
    first = Task.objects.get(pk=first.pk)
    assert first.slot_freed_at == clock.now
    # Work was waiting: the result is left to the results queue.
    assert first.status == Status.IN_PROGRESS
    assert ("finish", first.pk, first.poll_token) in sent

    # With nothing waiting, the worker stores the result itself at once.
    clock.advance(seconds=1)
    workers.poll_job(second.pk, second.poll_token)
    assert Task.objects.get(pk=second.pk).status == Status.SUCCESS


def test_with_many_jobs_running_the_result_goes_to_the_results_queue(
    caller, clock, sent, monkeypatch
):
    """Nothing waits for the freed slot, but more jobs still run than the worker's other
    processes are left for: making the result here (image work) could hold this process while
    their polls come due, so the results queue makes it. With few running, the step makes it
    at once (no hop through the niced results queue)."""
    from apps.tasks import scheduling, workers

    assert scheduling.INLINE_FINISH_MAX_OTHERS >= 1
    others = 1  # the Free plan's 3 unfinished tasks: one more running than allowed
    monkeypatch.setattr(scheduling, "INLINE_FINISH_MAX_OTHERS", others)
    sandbox_account(concurrency=others + 2, duration="1")
    jobs = [started(caller, prompt=f"a fox number {n}") for n in range(others + 2)]
    clock.advance(seconds=1)
    first = jobs[0]
    workers.poll_job(first.pk, first.poll_token)  # others + 1 still running
    first = Task.objects.get(pk=first.pk)
    assert (first.status, first.slot_freed_at) == (Status.IN_PROGRESS, clock.now)
    assert ("finish", first.pk, first.poll_token) in sent

    second = jobs[1]
    workers.poll_job(second.pk, second.poll_token)  # others still running: few enough
    second = Task.objects.get(pk=second.pk)
    assert second.status == Status.SUCCESS
    assert ("finish", second.pk, second.poll_token) not in sent
    # The first, its result still to be made, holds no slot: it was not counted.
    assert Task.objects.get(pk=first.pk).status == Status.IN_PROGRESS


def test_a_poll_step_that_frees_nothing_runs_no_dispatcher(caller, clock, sent, monkeypatch):
    from apps.tasks import scheduling, workers

    passes: list[int] = []
    monkeypatch.setattr(
        scheduling,
        "dispatch_run",
        lambda **kw: passes.append(1) or scheduling.DispatchResult([]),
    )
    sandbox_account(duration="5")
    task = started(caller)
    workers.poll_job(task.pk, task.poll_token)  # still running upstream
    assert passes == []
    clock.advance(seconds=5)
    workers.poll_job(task.pk, task.poll_token)
    assert passes == [1]


def test_a_worker_that_left_the_dispatch_to_another_leaves_the_result_to_the_queue(
    caller, clock, sent, monkeypatch
):
    """Another process was dispatching (work may be waiting): no result is made inline."""
    from apps.tasks import scheduling, workers

    monkeypatch.setattr(
        scheduling,
        "dispatch_run",
        lambda **kw: scheduling.DispatchResult([], deferred=True),
    )
    sandbox_account(duration="1")
    task = started(caller)
    clock.advance(seconds=1)
    workers.poll_job(task.pk, task.poll_token)
    task = Task.objects.get(pk=task.pk)
    assert (task.status, task.slot_freed_at) == (Status.IN_PROGRESS, clock.now)
    assert ("finish", task.pk, task.poll_token) in sent


def test_the_next_task_is_submitted_before_the_results_queue_is_asked(caller, clock, monkeypatch):
    """From the slot's point of view the finishing message's publish is dead time: the step
    submits the next task upstream first, then asks for the result."""
    from django.db import transaction

    from apps.engines.models import SandboxJob
    from apps.tasks import scheduling

    sandbox_account(concurrency=1, duration="1")
    first = started(caller)
    second = task_submit(caller=caller, action=Action.IMAGINE, prompt="a blue fox").task
    assert dispatch_pending().assigned == []

    order: list[tuple[str, bool]] = []
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())

    def record(name: str, *args: Any, **options: Any) -> None:
        order.append((name, SandboxJob.objects.filter(task_id=second.pk).exists()))

    monkeypatch.setattr(lifecycle, "send_after_commit", record)
    monkeypatch.setattr(lifecycle, "send_now", record)
    monkeypatch.setattr(scheduling, "send_now", record)
    clock.advance(seconds=1)
    scheduling.poll_step(task_id=first.pk, token=first.poll_token)

    assert Task.objects.get(pk=second.pk).status == Status.IN_PROGRESS
    finishes = [upstream_job for name, upstream_job in order if name == "tasks.finish_job"]
    assert finishes == [True]  # one finishing message, sent once the next job existed


def test_a_hand_on_that_crashes_still_asks_for_the_result(caller, clock, outbox, monkeypatch):
    from apps.tasks import scheduling

    def crash(account_id: int) -> bool:
        raise RuntimeError("the dispatcher broke")

    monkeypatch.setattr(scheduling, "_hand_on_slot", crash)
    sandbox_account(duration="1")
    task = started(caller)
    clock.advance(seconds=1)
    outbox.clear()
    with pytest.raises(RuntimeError):
        scheduling.poll_step(task_id=task.pk, token=task.poll_token)
    task = Task.objects.get(pk=task.pk)
    assert task.slot_freed_at == clock.now
    assert ("tasks.finish_job", task.pk, task.poll_token, None) in outbox


def test_with_nothing_waiting_the_step_stores_the_result_without_a_message(caller, clock, outbox):
    from apps.tasks import scheduling

    sandbox_account(duration="1")
    task = started(caller)
    clock.advance(seconds=1)
    outbox.clear()
    scheduling.poll_step(task_id=task.pk, token=task.poll_token)
    assert Task.objects.get(pk=task.pk).status == Status.SUCCESS
    assert [m for m in outbox if m[0] == "tasks.finish_job"] == []


def test_the_first_poll_is_reckoned_from_the_upstreams_answer(caller, clock, monkeypatch):
    """Its countdown runs from the moment the upstream answered the submit (the writes and
    the commit after that do not delay it)."""
    import time

    from django.db import transaction

    sandbox_account(duration="0.5")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()
    anchors: list[tuple[str, float | None, float | None]] = []
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    monkeypatch.setattr(
        lifecycle,
        "send_after_commit",
        lambda name, *args, countdown=None, counted_from=None, **_: anchors.append(
            (name, countdown, counted_from)
        ),
    )
    submitted_at: list[float] = []
    real_submit = sandbox_engine.SandboxEngine.submit

    def submit(self, job):
        answer = real_submit(self, job)
        submitted_at.append(time.monotonic())
        return answer

    monkeypatch.setattr(sandbox_engine.SandboxEngine, "submit", submit)
    task_start(task_id=task.pk)
    ((_, countdown, counted_from),) = [a for a in anchors if a[0] == "tasks.poll_job"]
    assert countdown == pytest.approx(0.5 + POLL_ETA_SLACK)
    assert counted_from is not None and 0 <= counted_from - submitted_at[0] < 0.05


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_poll_step_whose_account_another_pass_holds_tries_its_own_pass_again(
    caller, clock, sent, monkeypatch
):
    """Two slots of one account freed at the same moment: the other step's pass holds the
    account (and may have counted this slot as still held). This step waits for it and runs
    its own pass again, so the next task starts here and now, not after the contended
    dispatch's half-second retry."""
    import threading
    from types import SimpleNamespace

    from django.db import connection, transaction

    from apps.engines.models import UpstreamAccount
    from apps.tasks import scheduling, workers

    account = sandbox_account(concurrency=1, duration="1")
    first = started(caller)
    second = task_submit(caller=caller, action=Action.IMAGINE, prompt="a blue fox").task
    locked, release = threading.Event(), threading.Event()

    def other_pass() -> None:
        try:
            with transaction.atomic():
                UpstreamAccount.objects.select_for_update().get(pk=account.pk)
                locked.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    holder = threading.Thread(target=other_pass)
    holder.start()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the other pass ends while this step waits
        waits.append(seconds)
        release.set()
        holder.join(timeout=10)

    monkeypatch.setattr(scheduling, "time", SimpleNamespace(sleep=sleep), raising=False)
    try:
        assert locked.wait(timeout=10)
        clock.advance(seconds=1)
        before = len(sent)
        workers.poll_job(first.pk, first.poll_token)
    finally:
        release.set()
        holder.join(timeout=10)
    assert waits == [scheduling.OWN_PASS_RETRY_DELAY]
    second = Task.objects.get(pk=second.pk)
    assert second.status == Status.IN_PROGRESS  # started in that same step
    assert ("dispatch",) not in sent[before:]  # no contended retry was needed
