"""Retention of the discord engine's job records: old rows are purged hourly by beat, recent
ones (and every row of a task that may still run) stay, and a finished task's buttons still
work after its record is gone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.discord.retention import discord_jobs_purge
from apps.engines.discord.workers import PURGE_TASK, purge_jobs
from config.celery import app

from .conftest import GatewayThread, job_for, parent_of, poll_until_done

DAY = timedelta(days=1)


def _row(account: Any, nonce: str, *, phase: str, age: timedelta) -> DiscordJob:
    row = DiscordJob.objects.create(
        nonce=nonce,
        account_id=account.pk,
        task_id=f"task-{nonce}",
        action="IMAGINE",
        command="imagine",
        phase=phase,
        bot_id="936929561302675456",
        channel_id="700000000000000001",
    )
    then = timezone.now() - age
    # update() skips auto_now: the row looks as old as asked.
    DiscordJob.objects.filter(pk=row.pk).update(created_at=then, updated_at=then)
    return row


def _left() -> set[str]:
    return set(DiscordJob.objects.values_list("nonce", flat=True))


@pytest.mark.django_db
def test_rows_untouched_for_the_retention_are_purged_in_batches(
    make_account: Callable[..., Any], settings: Any
) -> None:
    settings.DISCORD_JOB_RETENTION_DAYS = 30
    account, _token = make_account()
    for n, phase in enumerate([Phase.SUCCESS, Phase.FAILURE, Phase.REFUSED, Phase.RUNNING]):
        _row(account, f"old-{n}", phase=phase, age=31 * DAY)
    _row(account, "recent-success", phase=Phase.SUCCESS, age=29 * DAY)
    _row(account, "fresh-running", phase=Phase.RUNNING, age=timedelta(minutes=1))
    # Created long ago, but the bot spoke about it yesterday: still kept.
    touched = _row(account, "touched", phase=Phase.SUCCESS, age=40 * DAY)
    DiscordJob.objects.filter(pk=touched.pk).update(updated_at=timezone.now() - DAY)

    assert discord_jobs_purge(batch_size=3) == 4
    assert _left() == {"recent-success", "fresh-running", "touched"}
    assert discord_jobs_purge() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("days", "kept"),
    [
        (0, {"a-year", "three-days", "a-day"}),  # 0 keeps everything
        (0.5, {"a-day"}),  # never less than two days: a second step may wait a day
        (30, {"three-days", "a-day"}),
    ],
)
def test_the_retention_setting(
    make_account: Callable[..., Any], settings: Any, days: float, kept: set[str]
) -> None:
    settings.DISCORD_JOB_RETENTION_DAYS = days
    account, _token = make_account()
    _row(account, "a-year", phase=Phase.SUCCESS, age=365 * DAY)
    _row(account, "three-days", phase=Phase.SUCCESS, age=3 * DAY)
    _row(account, "a-day", phase=Phase.SUCCESS, age=DAY)
    purge_jobs()  # the beat task, run in place
    assert _left() == kept


def test_beat_purges_the_job_records_hourly() -> None:
    schedule = {
        entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    assert schedule[PURGE_TASK] == 3600.0
    app.loader.import_default_modules()
    assert PURGE_TASK in app.tasks


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_purged_tasks_buttons_still_work(
    engine: DiscordEngine,
    make_account: Callable[..., Any],
    gateway: Callable[..., GatewayThread],
) -> None:
    account, _token = make_account()
    gateway(account_ids={account.pk}).wait_connected(account.pk)
    imagine = job_for(account, prompt="a lighthouse at dusk")
    submitted = engine.submit(imagine)
    imagine = replace(imagine, upstream_job_id=submitted.upstream_job_id)
    grid = poll_until_done(engine, imagine)
    assert grid.status == "success", grid.fail_reason

    assert discord_jobs_purge(older_than=timedelta(0)) == 1
    assert not DiscordJob.objects.filter(task_id=imagine.task_id).exists()

    upsample = next(
        b["custom_id"] for b in grid.state["buttons"] if "::upsample::1::" in b["custom_id"]
    )
    pressed = job_for(
        account, action="UPSCALE", custom_id=upsample, parent=parent_of(imagine, grid.state)
    )
    submitted = engine.submit(pressed)
    single = poll_until_done(engine, replace(pressed, upstream_job_id=submitted.upstream_job_id))
    assert single.status == "success", single.fail_reason
    assert single.image is not None and single.image.data
