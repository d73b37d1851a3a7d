"""A task's own hook that answered 410 Gone gets nothing more of that task (SPEC §7: "410
disables at once"). Organization endpoints are disabled instead; a task hook has no row to
disable, so the 410 is recorded for the task and the hook's target."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.delivery import events_deliver
from apps.webhooks.models import (
    DeliveryState,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import delivery_resend, webhook_secret_ensure

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private", "fresh_pool")]


def change(task: Task, **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type=None)


def test_a_task_hook_that_answered_410_gets_no_later_message_of_that_task(
    organization, make_task, receiver
):
    receiver.respond = lambda request: 410 if request["path"] == "/hook" else 200
    webhook_secret_ensure(organization=organization)
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    task = make_task(notify_hook=receiver.url("/hook"))
    first = change(task, status="SUBMITTED")
    events_deliver(event_ids=[e.pk for e in first])
    assert [r["answered"] for r in receiver.on("/hook")] == [410]

    later = change(task, status="SUCCESS", progress=100)
    # Nothing is written for the hook; the organization's endpoint still gets the change.
    assert [e.endpoint_id for e in later] == [endpoint.pk]
    events_deliver(event_ids=[e.pk for e in later])
    assert len(receiver.on("/hook")) == 1
    assert len(receiver.on("/org")) == 2

    # Only that task: another task's message to the same hook is still sent.
    [other] = change(make_task(notify_hook=receiver.url("/hook")), status="SUBMITTED")[:1]
    events_deliver(event_ids=[other.pk])
    assert len(receiver.on("/hook")) == 2


def test_a_message_written_while_the_410_was_recorded_is_ended_unsent(make_task, receiver):
    """The publisher read the chain before the 410 was committed and wrote its message after
    the chain's waiting messages were ended: it is ended when claimed, without a request. A
    manual resend still goes out."""
    receiver.respond = lambda request: 410
    task = make_task(notify_hook=receiver.url())
    [first] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[first.pk])
    assert len(receiver.requests) == 1

    # What the racing publisher wrote: the chain's next message and its first attempt.
    late = WebhookEvent.objects.create(
        msg_id="msg_late",
        organization=task.organization,
        event_type=first.event_type,
        body=first.body,
        task=task,
        url=first.url,
        target_key=first.target_key,
        sequence=first.sequence + 1,
        task_status="SUCCESS",
    )
    attempt = WebhookDelivery.objects.create(
        organization=task.organization,
        event=late,
        attempt=1,
        next_attempt_at=first.created_at,
        url=first.url,
    )
    events_deliver(event_ids=[late.pk])
    assert len(receiver.requests) == 1
    attempt.refresh_from_db()
    late.refresh_from_db()
    assert (attempt.state, attempt.error, attempt.attempted_at) == (
        DeliveryState.DEAD,
        "Not sent: the hook answered 410 Gone to an earlier message.",
        None,
    )
    assert late.state == EventState.DEAD

    resent = delivery_resend(organization=task.organization, delivery_id=attempt.pk)
    events_deliver(event_ids=[late.pk])
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [first.msg_id, "msg_late"]
    resent.refresh_from_db()
    assert (resent.state, resent.status_code) == (DeliveryState.DEAD, 410)
