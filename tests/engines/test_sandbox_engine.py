"""The sandbox engine behind the engine interface: jobs, progress, failures, the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.engines.base import (
    Engine,
    PermanentEngineError,
    PollResult,
    engine_names,
    get_engine,
    register,
)
from apps.engines.models import SandboxJob
from apps.engines.sandbox.engine import (
    DEFAULT_DURATION,
    PROGRESS_STEPS,
    STALL_PROGRESS,
    SandboxEngine,
    _fraction,
    progress_at,
)
from apps.tasks.enums import Action, ErrorCode
from apps.tasks.jobs import job_for
from apps.tasks.models import Task
from tests.factories import TaskFactory, UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def engine() -> SandboxEngine:
    found = get_engine("sandbox")
    assert isinstance(found, SandboxEngine)
    return found


def account(**options: object):
    return UpstreamAccountFactory(modes=["FAST"], options=options)


def shorten_task(organization, prompt: str = "a long and winding road") -> Task:
    return TaskFactory(
        organization=organization, action=Action.SHORTEN, prompt=prompt, prompt_en=prompt, seed=3
    )


def test_the_registry_finds_engines_by_name():
    assert "sandbox" in engine_names()
    with pytest.raises(KeyError) as info:
        get_engine("carrier-pigeon")
    assert "Unknown engine 'carrier-pigeon'. Known engines: " in str(info.value)
    with pytest.raises(ValueError, match=r"^An engine needs a name\.$"):
        register(Engine())


def test_submit_is_idempotent_by_task_and_find_job_finds_it(engine, organization):
    upstream = account(duration=5)
    task = shorten_task(organization)
    assert engine.find_job(job_for(task, upstream)) is None
    first = engine.submit(job_for(task, upstream))
    again = engine.submit(job_for(task, upstream))
    assert first.upstream_job_id == again.upstream_job_id
    job = SandboxJob.objects.get()
    assert (job.job_id, job.task_id, job.submit_calls, job.duration) == (
        first.upstream_job_id,
        task.pk,
        2,
        5.0,
    )
    found = engine.find_job(job_for(task, upstream))
    assert found is not None and found.upstream_job_id == first.upstream_job_id
    assert SandboxJob.objects.get().submit_calls == 2  # looking is not submitting


def test_progress_follows_the_duration_then_the_result(engine, organization, monkeypatch):
    start = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: start)
    upstream = account(duration=10)
    task = shorten_task(organization)
    task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id

    seen = []
    for seconds in (0, 2.5, 5, 9.99):
        monkeypatch.setattr(timezone, "now", lambda s=seconds: start + timedelta(seconds=s))
        outcome = engine.poll(job_for(task, upstream))
        assert outcome.status == PollResult.RUNNING
        seen.append(outcome.progress)
    assert seen == [0, 23, 54, 96]  # Midjourney's steps, never 100 before the result

    monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=10))
    done = engine.poll(job_for(task, upstream))
    assert done.status == PollResult.SUCCESS
    assert done.progress == 100
    assert len(done.properties["prompts"]) == 5
    assert done.properties["finalPrompt"].startswith(done.properties["analysis"])
    assert done.seed == 3


def test_progress_moves_in_many_realistic_steps() -> None:
    """A client polling every second of a default six-second job sees it move at nearly every
    poll, in Midjourney's steps, never backwards and never 100 before the result."""
    seen = [progress_at(second / 2, DEFAULT_DURATION) for second in range(12)]
    assert seen == sorted(seen)
    assert len(set(seen)) >= 10
    assert set(seen) <= set(PROGRESS_STEPS) and max(seen) < 100
    assert progress_at(0, 6) == 0 and progress_at(6, 6) == PROGRESS_STEPS[-1]
    assert progress_at(3, 0) == PROGRESS_STEPS[-1]


def test_a_stalled_job_never_finishes(engine, organization, monkeypatch):
    upstream = account(duration=1, stall="true")
    task = shorten_task(organization)
    task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id
    later = timezone.now() + timedelta(days=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    outcome = engine.poll(job_for(task, upstream))
    assert (outcome.status, outcome.progress) == (PollResult.RUNNING, STALL_PROGRESS)


def test_fail_rate_picks_the_same_tasks_every_time(engine, organization):
    upstream = account(duration=0, fail_rate=0.5)
    results = {}
    tasks = {}
    for n in range(40):
        task = shorten_task(organization, f"road {n}")
        task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id
        tasks[task.pk] = task
        results[task.pk] = engine.poll(job_for(task, upstream)).status
        assert (results[task.pk] == PollResult.FAILURE) == (_fraction(task.pk) < 0.5)
    failures = list(results.values()).count(PollResult.FAILURE)
    assert 5 < failures < 35  # about half, chosen from the task id
    failed = next(pk for pk, status in results.items() if status == PollResult.FAILURE)
    outcome = engine.poll(job_for(tasks[failed], upstream))  # polled again: same answer
    assert outcome.status == PollResult.FAILURE
    assert outcome.error_code == ErrorCode.UPSTREAM_REJECTED


def test_each_account_runs_its_own_job_and_a_cancelled_job_is_never_reused(engine, organization):
    first, second = account(duration=5, stall=True), account(duration=5)
    task = shorten_task(organization)
    on_first = engine.submit(job_for(task, first)).upstream_job_id

    # Moved to another account: a fresh job there, not the first account's stalled one.
    on_second = engine.submit(job_for(task, second)).upstream_job_id
    assert on_second != on_first
    assert SandboxJob.objects.get(job_id=on_second).stall is False
    found = engine.find_job(job_for(task, second))
    assert found is not None and found.upstream_job_id == on_second

    # Stopping the first account's job leaves the second's running …
    task.upstream_job_id = on_first
    engine.cancel(job_for(task, first))
    jobs = dict(SandboxJob.objects.values_list("job_id", "cancelled"))
    assert jobs == {on_first: True, on_second: False}
    # … and a task moved back to the first account gets a fresh job, not the cancelled one.
    assert engine.find_job(job_for(task, first)) is None
    back = engine.submit(job_for(task, first)).upstream_job_id
    assert back not in (on_first, on_second)
    assert SandboxJob.objects.filter(task_id=task.pk).count() == 3


def test_a_cancelled_job_reports_a_failure(engine, organization):
    upstream = account(duration=0)
    task = shorten_task(organization)
    task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id
    engine.cancel(job_for(task, upstream))
    outcome = engine.poll(job_for(task, upstream))
    assert (outcome.status, outcome.fail_reason, outcome.error_code) == (
        PollResult.FAILURE,
        "The sandbox job was cancelled.",
        ErrorCode.UPSTREAM_ERROR,
    )


def test_cancel_marks_the_job_and_an_unknown_job_is_a_permanent_error(engine, organization):
    upstream = account(duration=5)
    task = shorten_task(organization)
    task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id
    engine.cancel(job_for(task, upstream))
    assert SandboxJob.objects.get().cancelled is True
    task.upstream_job_id = "no-such-job"
    with pytest.raises(PermanentEngineError) as info:
        engine.poll(job_for(task, upstream))
    assert info.value.message == "The sandbox has no record of this job."


def test_a_follow_up_whose_parent_has_no_image_is_a_permanent_error(engine, organization):
    upstream = account(duration=0)
    parent = shorten_task(organization)
    task = Task.objects.create(
        organization=organization, action=Action.UPSCALE, parent=parent, params={"index": 1}
    )
    task.upstream_job_id = engine.submit(job_for(task, upstream)).upstream_job_id
    with pytest.raises(PermanentEngineError) as info:
        engine.poll(job_for(task, upstream))
    assert (info.value.message, info.value.error_code) == (
        "The parent task has no stored image.",
        ErrorCode.INVALID_PARAMETER,
    )


def test_engines_are_registered_when_django_starts():
    """Worker threads look engines up concurrently: the registry must be full before that."""
    code = (
        "import django; django.setup()\n"
        "from apps.engines.base import _REGISTRY\n"
        "print(','.join(sorted(_REGISTRY)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        check=True,
    )
    assert "sandbox" in result.stdout.strip().split(",")
