"""A send's deadline runs from when its POST begins, not from when it was queued.

A delivery loop claims up to ``BATCH_SIZE`` attempts, but the process has fewer sending threads
(``WEBHOOK_SEND_CONCURRENCY``, shared by its loops), so a send may wait for a thread. Such a send
is never recorded as failed while it may still go out (which sent it twice: once late, once as
the retry); one still waiting when the loop must stop is cancelled and handed back unsent; one
that began is waited for, and if it outlives its own deadline (a bug) no outcome is made up.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks import delivery as delivery_module
from apps.webhooks.conf import CLAIM_LEASE, DISPATCH_LEASE
from apps.webhooks.delivery import events_deliver
from apps.webhooks.models import (
    DeliveryState,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import balance_low_publish, webhook_secret_ensure

from .conftest import T0

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private", "fresh_pool")]


def publish(task: Task, **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type="task.updated")


@pytest.mark.slow
def test_a_send_queued_behind_slow_ones_is_recorded_with_its_real_outcome(
    organization, receiver, settings
):
    """Scaled down: 1 thread, a 1 s total timeout, a receiver answering 200 in 0.4 s, 20
    messages: the last ones wait far longer than a request may take before their POST begins."""
    settings.WEBHOOK_SEND_CONCURRENCY = 1
    settings.WEBHOOK_TOTAL_TIMEOUT = 1.0
    settings.WEBHOOK_CONNECT_TIMEOUT = 1.0
    settings.WEBHOOK_READ_TIMEOUT = 1.0

    def slow_ok(request: dict[str, Any]) -> int:
        time.sleep(0.4)
        return 200

    receiver.respond = slow_ok
    webhook_secret_ensure(organization=organization)
    WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    events: list[WebhookEvent] = []
    for _ in range(20):
        events += balance_low_publish(organization=organization, available=1, held=0, threshold=100)

    events_deliver(event_ids=[e.pk for e in events], time_budget=60)

    assert sorted(r["headers"]["webhook-id"] for r in receiver.requests) == sorted(
        e.msg_id for e in events
    )
    attempts = WebhookDelivery.objects.filter(event__in=events)
    assert (
        sorted(attempts.values_list("attempt", "state", "error"))
        == [(1, DeliveryState.SUCCEEDED, "")] * 20
    )
    assert set(WebhookEvent.objects.filter(pk__in=[e.pk for e in events]).values_list("state")) == {
        (EventState.SUCCEEDED,)
    }


def test_sends_not_begun_when_the_loop_stops_are_handed_back_unsent(
    make_task, receiver, settings, clock
):
    """1 thread; the first receiver holds its request past the loop's time budget. The three
    sends still waiting for the thread are cancelled: never sent, nothing recorded, their
    claims released; the next loop sends each of them once."""
    settings.WEBHOOK_SEND_CONCURRENCY = 1
    first_seen = threading.Event()
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> int:
        with lock:
            first = not first_seen.is_set()
            first_seen.set()
        if first:
            time.sleep(2.0)  # well past the 0.3 s budget below
        return 200

    receiver.respond = respond
    events = [publish(make_task(notify_hook=receiver.url()), status="SUBMITTED")[0] for _ in "abcd"]

    events_deliver(event_ids=[e.pk for e in events], time_budget=0.3)

    [sent] = receiver.requests
    attempts = {a.event_id: a for a in WebhookDelivery.objects.filter(event__in=events)}
    assert len(attempts) == 4  # no retry was scheduled for anything
    first = next(e for e in events if e.msg_id == sent["headers"]["webhook-id"])
    assert attempts[first.pk].state == DeliveryState.SUCCEEDED
    handed_back = [attempts[e.pk] for e in events if e.pk != first.pk]
    assert [
        (a.state, a.error, a.claimed_until, a.claim_token, a.dispatched_until) for a in handed_back
    ] == [(DeliveryState.PENDING, "", None, "", T0 + DISPATCH_LEASE)] * 3

    events_deliver(event_ids=[e.pk for e in events], time_budget=60)
    assert sorted(r["headers"]["webhook-id"] for r in receiver.requests) == sorted(
        e.msg_id for e in events
    )
    assert set(WebhookDelivery.objects.filter(event__in=events).values_list("state")) == {
        (DeliveryState.SUCCEEDED,)
    }


def test_a_send_outliving_its_own_deadline_is_not_recorded_as_failed(
    organization, receiver, settings, monkeypatch, clock
):
    """A request that runs past its total deadline is a bug in the HTTP client: whether it
    reached the receiver is unknown. No failure is made up (no retry that could duplicate it,
    no failure streak); the attempt stays claimed until its lease ends."""
    settings.WEBHOOK_TOTAL_TIMEOUT = 0.2
    monkeypatch.setattr(delivery_module, "SEND_GRACE_SECONDS", 0.3, raising=False)
    webhook_secret_ensure(organization=organization)
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    events = [
        event
        for _ in range(2)
        for event in balance_low_publish(
            organization=organization, available=1, held=0, threshold=100
        )
    ]
    hung_id = events[1].msg_id
    release = threading.Event()
    real_post = delivery_module._post

    def post(claim: Any, signing_secrets: list[str]) -> Any:
        if claim.msg_id == hung_id:
            release.wait(10)  # stuck past every deadline
            return delivery_module._Outcome(success=True, status_code=200)
        return real_post(claim, signing_secrets)

    monkeypatch.setattr(delivery_module, "_post", post)
    try:
        events_deliver(event_ids=[e.pk for e in events], time_budget=60)
        hung = WebhookDelivery.objects.get(event=events[1])
        assert (hung.state, hung.error, hung.claimed_until) == (
            DeliveryState.PENDING,
            "",
            T0 + CLAIM_LEASE,
        )
        assert WebhookDelivery.objects.filter(event=events[1]).count() == 1
        assert WebhookDelivery.objects.get(event=events[0]).state == DeliveryState.SUCCEEDED
        endpoint.refresh_from_db()
        assert endpoint.failing_since is None
    finally:
        release.set()
