"""A claim handed back unsent leaves its attempt as it was before the claim: no attempt shows in
the delivery log, and progress coalescing can still supersede the message."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.delivery import events_deliver
from apps.webhooks.models import DeliveryState, WebhookDelivery, WebhookEvent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private", "fresh_pool")]


def _publish(task: Task, **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type="task.updated")


def test_a_send_handed_back_unsent_shows_no_attempt(make_task, receiver, settings, clock):
    """The claim stamps ``attempted_at`` (and the URL) on every attempt it claims; a send
    cancelled before its POST began is handed back with both put back. Left stamped, the
    delivery log (API and admin) showed an attempt that never happened, and progress
    coalescing (``attempted_at__isnull=True``) could no longer supersede the message."""
    settings.WEBHOOK_SEND_CONCURRENCY = 1
    first_seen = threading.Event()
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> int:
        with lock:
            first = not first_seen.is_set()
            first_seen.set()
        if first:
            time.sleep(1.5)
        return 200

    receiver.respond = respond
    events = [_publish(make_task(notify_hook=receiver.url()), status="SUBMITTED")[0] for _ in "abc"]

    events_deliver(event_ids=[e.pk for e in events], time_budget=0.3)

    [sent] = receiver.requests
    handed_back = [
        a
        for a in WebhookDelivery.objects.filter(event__in=events)
        if a.event.msg_id != sent["headers"]["webhook-id"]
    ]
    assert len(handed_back) == 2
    assert [(a.state, a.claim_token) for a in handed_back] == [(DeliveryState.PENDING, "")] * 2
    assert [a.attempted_at for a in handed_back] == [None, None]
