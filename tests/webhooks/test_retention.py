"""Finished webhook messages are deleted by beat after the retention; pending messages never
are, whatever their age."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.models import EventState, WebhookDelivery, WebhookEvent
from apps.webhooks.services import webhook_messages_purge
from apps.webhooks.workers import purge
from config.celery import app

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private")]

DAY = 86400


def publish(task: Task, **fields: object) -> WebhookEvent:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        [event] = task_changed(task=task, event_type="task.updated")
    return event


def finish(event: WebhookEvent, state: str, at: object) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(state=state, finished_at=at)
    WebhookDelivery.objects.filter(event=event).update(
        state="succeeded" if state == "succeeded" else "dead"
    )


def test_finished_messages_past_the_retention_are_deleted_with_their_attempts(
    organization, other_organization, make_task, clock, settings
):
    settings.WEBHOOK_RETENTION_DAYS = 30
    task = make_task(notify_hook="https://client.example.com/hook")
    theirs = make_task(other_organization, notify_hook="https://other.example.com/hook")
    old_ok = publish(task, status="SUBMITTED")
    old_dead = publish(task, status="IN_PROGRESS", progress=10)
    old_superseded = publish(task, status="IN_PROGRESS", progress=20)
    old_pending = publish(task, status="IN_PROGRESS", progress=30)  # still being retried
    their_old = publish(theirs, status="SUBMITTED")
    finish(old_ok, EventState.SUCCEEDED, clock.now)
    finish(old_dead, EventState.DEAD, clock.now)
    finish(old_superseded, EventState.SUPERSEDED, clock.now)
    finish(their_old, EventState.SUCCEEDED, clock.now)
    clock.advance(DAY)
    recent = publish(task, status="SUCCESS", progress=100)
    finish(recent, EventState.SUCCEEDED, clock.now)

    clock.advance(30 * DAY)  # the old ones finished 31 days ago, ``recent`` 30 days ago
    assert webhook_messages_purge() == 4
    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == {old_pending.pk, recent.pk}
    assert set(WebhookDelivery.objects.values_list("event_id", flat=True)) == {
        old_pending.pk,
        recent.pk,
    }
    # A pending message is never deleted, however old.
    clock.advance(365 * DAY)
    purge.run()
    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [old_pending.pk]
    assert WebhookDelivery.objects.get().state == "pending"


def test_purging_in_batches_and_keeping_forever(make_task, clock, settings):
    task = make_task(notify_hook="https://client.example.com/hook")
    events = [publish(task, status="IN_PROGRESS", progress=p) for p in range(5)]
    for event in events:
        finish(event, EventState.SUCCEEDED, clock.now)
    clock.advance(100 * DAY)
    settings.WEBHOOK_RETENTION_DAYS = 0  # keep forever
    assert webhook_messages_purge() == 0
    assert WebhookEvent.objects.count() == 5
    settings.WEBHOOK_RETENTION_DAYS = 99
    assert webhook_messages_purge(time_budget=0) == 0  # out of time before the first batch
    assert webhook_messages_purge(batch_size=2) == 5
    assert WebhookEvent.objects.count() == WebhookDelivery.objects.count() == 0


def test_beat_runs_both_purges_hourly():
    schedule = {
        entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    assert schedule["webhooks.purge"] == 3600.0
    assert schedule["core.purge_idempotency_records"] == 3600.0
    app.loader.import_default_modules()
    assert {"webhooks.purge", "core.purge_idempotency_records"} <= set(app.tasks)
