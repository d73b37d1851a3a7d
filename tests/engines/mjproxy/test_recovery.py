"""Submits whose outcome is unknown (read timeout, worker died) are found, never sent twice."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.base import get_engine
from apps.engines.mjproxy.engine import client_for
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.jobs import account_view, job_for
from apps.tasks.lifecycle import INTERRUPTED_SUBMITS, UNKNOWN_SINCE, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db


def _queued(organization, live_key, prompt: str = "a windmill") -> Task:
    caller = Caller(organization=organization, api_key=live_key.api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task
    dispatch_pending()
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED
    return task


def _worker_died_inside_submit(task: Task) -> None:
    """What the sweeper finds after a worker died between claiming the submit and recording it."""
    now = timezone.now()
    Task.objects.filter(pk=task.pk).update(
        submit_claimed_at=now - timedelta(minutes=5), lease_expires_at=now - timedelta(seconds=1)
    )


def test_a_submit_that_timed_out_is_adopted_instead_of_sent_again(funded, live_key, fake, settings):
    account = mjproxy_account(fake)
    task = _queued(funded, live_key)
    settings.MJPROXY_HTTP_TIMEOUT = 0.4
    fake.submit_delay = 1.0
    task_start(task_id=task.pk)

    waiting = Task.objects.get(pk=task.pk)
    assert waiting.status == Status.SUBMITTED
    assert waiting.submit_claimed_at is None
    # Unanswered: when it was sent is kept, as the upstream may still be making the job.
    assert set(waiting.engine_state) == {INTERRUPTED_SUBMITS, UNKNOWN_SINCE}
    assert waiting.engine_state[INTERRUPTED_SUBMITS] == 1
    assert waiting.upstream_account_id == account.pk
    marker = f"mjgate:{task.pk}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(j.state == marker for j in fake.jobs.values()):
        time.sleep(0.02)  # the upstream finishes handling the request we gave up on

    fake.submit_delay = 0
    task_start(task_id=task.pk)
    running = Task.objects.get(pk=task.pk)
    assert running.status == Status.IN_PROGRESS
    assert running.upstream_job_id == fake.job_for_state(marker).id
    assert fake.submits_per_state() == {marker: 1}
    assert len(fake.requests_to("/mj/task/list")) == 1


def test_the_sweeper_resumes_a_dead_workers_submit_and_adopts_the_job(funded, live_key, fake):
    account = mjproxy_account(fake)
    task = _queued(funded, live_key)
    _worker_died_inside_submit(task)
    # The dead worker's request did reach the upstream.
    get_engine("mjproxy").submit(job_for(Task.objects.get(pk=task.pk), account))

    report = tasks_sweep()
    assert report["resumed"] == 1
    resumed = Task.objects.get(pk=task.pk)
    assert (resumed.status, resumed.submit_claimed_at) == (Status.SUBMITTED, None)
    task_start(task_id=task.pk)
    running = Task.objects.get(pk=task.pk)
    assert running.status == Status.IN_PROGRESS
    marker = f"mjgate:{task.pk}"
    assert running.upstream_job_id == fake.job_for_state(marker).id
    assert fake.submits_per_state() == {marker: 1}
    fake.finish(running.upstream_job_id)
    assert poll(task.pk).status == Status.SUCCESS


def test_a_dead_workers_submit_that_never_arrived_is_sent_once(funded, live_key, fake):
    mjproxy_account(fake)
    task = _queued(funded, live_key)
    _worker_died_inside_submit(task)
    tasks_sweep()
    task_start(task_id=task.pk)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    assert fake.submits_per_state() == {f"mjgate:{task.pk}": 1}
    assert len(fake.requests_to("/mj/task/list")) == 1


def _region_edit_assigned(funded, live_key, fake) -> tuple[Task, Task]:
    """An upscale of a grid and its Vary (Region) task, form answered and assigned (not sent)."""
    caller = Caller(organization=funded, api_key=live_key.api_key)
    grid = start(task_submit(caller=caller, action=Action.IMAGINE, prompt="a cat").task.pk)
    fake.finish(grid.upstream_job_id)
    grid = poll(grid.pk)
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    upscale = start(task_press(caller=caller, parent_id=grid.pk, custom_id=u1).task.pk)
    fake.finish(upscale.upstream_job_id)
    upscale = poll(upscale.pk)
    region = next(b["custom_id"] for b in upscale.buttons if b["label"] == "Vary (Region)")
    modal = task_press(caller=caller, parent_id=upscale.pk, custom_id=region).task
    task_submit_modal(
        caller=caller, task_id=modal.pk, prompt="a cat in a hat", mask=data_url(png_bytes())
    )
    dispatch_pending()
    return upscale, modal


def test_an_interrupted_two_step_action_gets_its_second_step(funded, live_key, fake):
    account = mjproxy_account(fake)
    upscale, modal = _region_edit_assigned(funded, live_key, fake)
    task = Task.objects.get(pk=modal.pk)
    assert task.status == Status.SUBMITTED
    _worker_died_inside_submit(task)
    # The dead worker got as far as the first step: the upstream holds a MODAL job for it.
    their_region = next(
        b["customId"]
        for b in fake.jobs[upscale.upstream_job_id].buttons
        if b["label"] == "Vary (Region)"
    )
    answer = client_for(account_view(account)).post(
        "/mj/submit/action",
        {"taskId": upscale.upstream_job_id, "customId": their_region, "state": f"mjgate:{task.pk}"},
    )
    assert answer.data["code"] == 21

    tasks_sweep()
    task_start(task_id=task.pk)
    running = Task.objects.get(pk=task.pk)
    assert running.status == Status.IN_PROGRESS
    assert running.upstream_job_id == answer.data["result"]
    (modal_request,) = fake.requests_to("/mj/submit/modal")
    assert modal_request.body["taskId"] == answer.data["result"]
    assert modal_request.body["prompt"] == "a cat in a hat"
    assert len(fake.submits("/mj/submit/action")) == 2  # U1, and the dead worker's


def test_a_busy_upstream_at_the_second_step_keeps_the_first_steps_job(funded, live_key, fake):
    """The form of a two-step action refused for a full queue: the MODAL job the first step
    made is still upstream, so the next start sends only the form, on the same account."""
    account = mjproxy_account(fake)
    _upscale, modal = _region_edit_assigned(funded, live_key, fake)
    fake.scripted_modal = [(23, "queue is full, please try again later")]
    task_start(task_id=modal.pk)

    waiting = Task.objects.get(pk=modal.pk)
    assert (waiting.status, waiting.upstream_account_id) == (Status.SUBMITTED, account.pk)
    assert waiting.engine_state == {INTERRUPTED_SUBMITS: 1}  # listed already: no settling
    marker = f"mjgate:{modal.pk}"
    assert fake.job_for_state(marker).status == "MODAL"

    task_start(task_id=modal.pk)
    running = Task.objects.get(pk=modal.pk)
    assert running.status == Status.IN_PROGRESS
    assert running.upstream_job_id == fake.job_for_state(marker).id
    assert fake.submits_per_state()[marker] == 1  # the first step, sent once
    assert [r.body["taskId"] for r in fake.requests_to("/mj/submit/modal")] == [
        running.upstream_job_id
    ] * 2
    fake.finish(running.upstream_job_id)
    assert poll(modal.pk).status == Status.SUCCESS


def test_without_a_task_list_an_interrupted_submit_fails_uncharged(funded, live_key, fake):
    mjproxy_account(fake)
    fake.supports_list = False
    task = _queued(funded, live_key)
    _worker_died_inside_submit(task)
    tasks_sweep()
    task_start(task_id=task.pk)
    failed = Task.objects.get(pk=task.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == ErrorCode.WORKER_LOST
    assert failed.fail_reason == (
        "The worker sending this task stopped, and the upstream cannot list its jobs to tell "
        "whether it received it; it was not sent again to avoid running it twice."
    )
    assert fake.submits() == []
    assert balance_get(organization=funded).held == 0
    assert list(
        LedgerEntry.objects.filter(task=failed).order_by("id").values_list("kind", flat=True)
    ) == [EntryKind.HOLD, EntryKind.RELEASE]


def test_an_upstream_down_while_we_look_keeps_the_question_open(funded, live_key, fake):
    account = mjproxy_account(fake)
    task = _queued(funded, live_key)
    _worker_died_inside_submit(task)
    tasks_sweep()
    fake.http_status = 503
    task_start(task_id=task.pk)
    waiting = Task.objects.get(pk=task.pk)
    assert waiting.status == Status.SUBMITTED
    assert waiting.engine_state[INTERRUPTED_SUBMITS] == 2
    assert waiting.upstream_account_id == account.pk
    assert fake.submits() == []
    fake.http_status = None
    task_start(task_id=task.pk)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    assert fake.submits_per_state() == {f"mjgate:{task.pk}": 1}
    assert UpstreamAccount.objects.get(pk=account.pk).consecutive_failures == 0


def test_a_server_error_on_submit_is_an_unknown_outcome_not_a_requeue(funded, live_key, fake):
    account = mjproxy_account(fake)
    task = _queued(funded, live_key)
    fake.http_status = 500
    task_start(task_id=task.pk)
    waiting = Task.objects.get(pk=task.pk)
    assert (waiting.status, waiting.upstream_account_id) == (Status.SUBMITTED, account.pk)
    assert waiting.engine_state == {INTERRUPTED_SUBMITS: 1}
    fake.http_status = None
    task_start(task_id=task.pk)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    assert len(fake.requests_to("/mj/task/list")) == 1
    # The 500 was answered before the fake made a job: asked first, then sent once more.
    marker = f"mjgate:{task.pk}"
    assert fake.submits_per_state() == {marker: 2}
    assert [job.state for job in fake.jobs.values()] == [marker]


class _Clock:
    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self):
        return self.now


def test_a_job_the_upstream_stops_listing_fails_uncharged_after_a_grace(
    funded, live_key, fake, monkeypatch
):
    from apps.engines.mjproxy.engine import (
        MAX_MISSING_POLLS,
        MISSING_GRACE_SECONDS,
        MISSING_POLLS,
    )

    clock = _Clock()
    monkeypatch.setattr(timezone, "now", clock)
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    task = start(task_submit(caller=caller, action=Action.IMAGINE, prompt="a windmill").task.pk)
    assert task.status == Status.IN_PROGRESS
    job_id = task.upstream_job_id
    fake.set_progress(job_id, 30)
    assert poll(task.pk).progress == 30

    forgotten = fake.jobs.pop(job_id)  # the proxy restarted without its task store
    for missing in range(1, MAX_MISSING_POLLS + 3):
        task = poll(task.pk)
        assert (task.status, task.progress) == (Status.IN_PROGRESS, 30)
        assert task.engine_state[MISSING_POLLS] == missing
    # Missed often enough, but not for long enough: a slow spell is not a lost job.
    clock.now += timedelta(seconds=MISSING_GRACE_SECONDS - 1)
    assert poll(task.pk).status == Status.IN_PROGRESS

    # Listed again: the count starts over.
    fake.jobs[job_id] = forgotten
    task = poll(task.pk)
    assert task.status == Status.IN_PROGRESS
    assert task.engine_state[MISSING_POLLS] == 0
    del fake.jobs[job_id]
    clock.now += timedelta(seconds=MISSING_GRACE_SECONDS)
    for _ in range(MAX_MISSING_POLLS - 1):
        assert poll(task.pk).status == Status.IN_PROGRESS
    clock.now += timedelta(seconds=MISSING_GRACE_SECONDS)
    task = poll(task.pk)
    assert (task.status, task.error_code) == (Status.FAILURE, ErrorCode.UPSTREAM_ERROR)
    assert task.fail_reason == (
        "The upstream no longer knows this job (it stopped listing it), so it cannot finish."
    )
    kinds = list(
        LedgerEntry.objects.filter(task_id=task.pk).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance_get(organization=funded).held == 0


def test_an_unanswered_submit_still_in_the_upstream_is_not_sent_again(
    funded, live_key, fake, settings
):
    """The submit read-times out while the upstream is still handling it (a slow Discord upload,
    a gateway 504). The look-up soon after finds nothing in /mj/task/list (the upstream lists a
    job only once it has made it); that is not taken as "never arrived" while the upstream may
    still be at it (``unknown_outcome_settle_seconds``): the task looks again later and adopts
    the job. Before, it submitted again: two upstream jobs for one task, the first orphaned."""
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a windmill").task
    dispatch_pending()
    settings.MJPROXY_HTTP_TIMEOUT = 0.4

    release = threading.Event()
    entered = threading.Event()
    real_submit = fake._submit
    calls = {"n": 0}

    def slow_first(path, body):
        calls["n"] += 1
        if calls["n"] == 1:
            entered.set()
            release.wait(10)  # the upstream is still working on the first request
        return real_submit(path, body)

    fake._submit = slow_first
    task_start(task_id=task.pk)  # read timeout -> outcome unknown, look-up scheduled
    assert entered.is_set()
    assert Task.objects.get(pk=task.pk).engine_state.get(INTERRUPTED_SUBMITS) == 1
    task_start(task_id=task.pk)  # the scheduled look-up (2 s later in production)
    assert calls["n"] == 1  # not sent again
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED
    release.set()
    marker = f"mjgate:{task.pk}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with fake._lock:
            if any(j.state == marker for j in fake.jobs.values()):
                break
        time.sleep(0.02)
    task_start(task_id=task.pk)  # the next look-up finds the first job and adopts it
    with fake._lock:
        jobs = [j.id for j in fake.jobs.values() if j.state == marker]
    running = Task.objects.get(pk=task.pk)
    assert len(jobs) == 1, f"one task, {len(jobs)} upstream jobs {jobs}"
    assert (running.status, running.upstream_job_id) == (Status.IN_PROGRESS, jobs[0])


def test_a_later_unanswered_submit_is_waited_for_too(funded, live_key, fake, settings):
    """The settle wait covers every submit that was sent and left unanswered, not only the
    task's first: a crash answer (500) first, then a submit that read-times out while the
    upstream still makes its job. The look-up after the second finds nothing yet; sending a
    third time would make two upstream jobs for the task."""
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a windmill").task
    dispatch_pending()
    fake.http_status = 500
    task_start(task_id=task.pk)  # answered by a crash: nothing to wait for
    assert Task.objects.get(pk=task.pk).engine_state == {INTERRUPTED_SUBMITS: 1}
    fake.http_status = None

    settings.MJPROXY_HTTP_TIMEOUT = 0.4
    release = threading.Event()
    entered = threading.Event()
    real_submit = fake._submit
    calls = {"n": 0}

    def slow_first(path, body):
        calls["n"] += 1
        if calls["n"] == 1:
            entered.set()
            release.wait(10)  # the upstream is still working on this request
        return real_submit(path, body)

    fake._submit = slow_first
    task_start(task_id=task.pk)  # looked up (nothing), sent again: read timeout
    assert entered.is_set()
    waiting = Task.objects.get(pk=task.pk)
    assert waiting.engine_state[INTERRUPTED_SUBMITS] == 2
    assert UNKNOWN_SINCE in waiting.engine_state
    task_start(task_id=task.pk)  # the scheduled look-up finds nothing yet
    assert calls["n"] == 1  # not sent a third time
    release.set()
    marker = f"mjgate:{task.pk}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with fake._lock:
            if any(j.state == marker for j in fake.jobs.values()):
                break
        time.sleep(0.02)
    task_start(task_id=task.pk)
    with fake._lock:
        jobs = [j.id for j in fake.jobs.values() if j.state == marker]
    running = Task.objects.get(pk=task.pk)
    assert len(jobs) == 1, f"one task, {len(jobs)} upstream jobs {jobs}"
    assert (running.status, running.upstream_job_id) == (Status.IN_PROGRESS, jobs[0])
