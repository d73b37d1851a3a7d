"""During an outage, progress messages queued behind a held one are coalesced: the receiver
later gets every status change, in order, and the newest progress — not one message per step."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.conf import DEFAULT_RETRY_SCHEDULE
from apps.webhooks.delivery import event_deliver, events_deliver
from apps.webhooks.models import (
    DeliveryState,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import webhook_secret_ensure

from .conftest import body, verify

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private")]


def change(task: Task, event_type: str = "task.updated", **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type=event_type)


def states(*events: WebhookEvent) -> list[str]:
    return [WebhookEvent.objects.get(pk=e.pk).state for e in events]


def test_progress_behind_a_held_message_is_coalesced_and_status_changes_are_kept(
    organization, make_task, receiver, clock
):
    _, secret = webhook_secret_ensure(organization=organization)
    assert secret is not None
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    receiver.respond = lambda request: 503  # the receiver is down
    task = make_task(notify_hook=receiver.url("/hook"))

    submitted = change(task, status="SUBMITTED")
    events_deliver(event_ids=[e.pk for e in submitted])  # fails: a retry is scheduled
    started = change(task, status="IN_PROGRESS", progress=10)
    steps = [change(task, status="IN_PROGRESS", progress=p) for p in (20, 30, 40, 50)]
    finished = change(task, "task.succeeded", status="SUCCESS", progress=100)

    for target in (0, 1):  # the task's hook, then the organization endpoint: same outcome
        chain = [submitted[target], started[target], *[s[target] for s in steps]]
        chain.append(finished[target])
        assert [e.progress_only for e in chain] == [False, False, True, True, True, True, False]
        assert states(*chain) == [
            "pending",  # the head: being retried, never touched
            "pending",  # a status change (SUBMITTED → IN_PROGRESS): kept
            "superseded",
            "superseded",
            "superseded",
            "pending",  # the newest progress
            "pending",  # a status change: kept
        ]
        for old, newer in pairwise(chain[2:6]):
            [attempt] = old.deliveries.all()
            assert attempt.state == DeliveryState.SUPERSEDED
            assert attempt.attempted_at is None
            # Each step is retired by the next one as it is published.
            assert attempt.error == (
                f"Not sent: superseded by the newer progress message {newer.msg_id}."
            )
            assert WebhookEvent.objects.get(pk=old.pk).finished_at == clock.now
    assert len(receiver.requests) == 2  # only the first attempt of each head

    # The receiver is back: the retry delivers what is left, in order, signed.
    receiver.respond = lambda request: 200
    clock.advance(DEFAULT_RETRY_SCHEDULE[0])
    events_deliver(event_ids=[e.pk for e in submitted])
    for path, target in (("/hook", 0), ("/org", 1)):
        delivered = [r for r in receiver.on(path) if r["answered"] == 200]
        expected = [submitted, started, steps[-1], finished]
        assert [r["headers"]["webhook-id"] for r in delivered] == [
            e[target].msg_id for e in expected
        ]
        for request in delivered:
            assert verify(secret, request) == body(request)
    hook = [body(r) for r in receiver.on("/hook") if r["answered"] == 200]
    assert [(b["status"], b["progress"]) for b in hook] == [
        ("SUBMITTED", 0),
        ("IN_PROGRESS", 10),
        ("IN_PROGRESS", 50),
        ("SUCCESS", 100),
    ]
    org = [body(r) for r in receiver.on("/org") if r["answered"] == 200]
    assert [(b["type"], b["data"]["progress"]) for b in org] == [
        ("task.updated", 0),
        ("task.updated", 10),
        ("task.updated", 50),
        ("task.succeeded", 100),
    ]
    assert WebhookEvent.objects.filter(endpoint=endpoint, state="pending").count() == 0
    assert WebhookEvent.objects.filter(state="superseded").count() == 6
    assert WebhookEvent.objects.filter(state="succeeded").count() == 8


def test_nothing_is_coalesced_while_messages_flow(make_task, receiver):
    task = make_task(notify_hook=receiver.url())
    for progress in (0, 10, 20, 30):
        [event] = change(task, status="IN_PROGRESS", progress=progress)
        events_deliver(event_ids=[event.pk])
    assert [json.loads(r["body"])["progress"] for r in receiver.requests] == [0, 10, 20, 30]
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"succeeded"}


def test_a_progress_only_head_is_left_alone(make_task, receiver, clock):
    task = make_task(notify_hook=receiver.url())
    [head] = change(task, status="IN_PROGRESS", progress=10)
    events_deliver(event_ids=[head.pk])  # delivered
    receiver.respond = lambda request: 503
    [failing] = change(task, status="IN_PROGRESS", progress=20)
    events_deliver(event_ids=[failing.pk])  # fails, retry scheduled: now the head
    [second] = change(task, status="IN_PROGRESS", progress=30)
    assert states(failing, second) == ["pending", "pending"]
    [third] = change(task, status="IN_PROGRESS", progress=40)
    assert states(failing, second, third) == ["pending", "superseded", "pending"]
    assert failing.deliveries.filter(state="pending").count() == 1


def test_a_status_change_is_never_superseded_and_breaks_the_run(make_task, receiver, clock):
    receiver.respond = lambda request: 503
    task = make_task(notify_hook=receiver.url())
    [head] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[head.pk])
    [first] = change(task, status="IN_PROGRESS", progress=10)
    [progress] = change(task, status="IN_PROGRESS", progress=20)
    # An operator moves the task back to SUBMITTED (another account): a status change.
    [back] = change(task, status="SUBMITTED", progress=0)
    [again] = change(task, status="IN_PROGRESS", progress=5)  # a status change again
    [later] = change(task, status="IN_PROGRESS", progress=15)
    [latest] = change(task, status="IN_PROGRESS", progress=25)
    assert [e.progress_only for e in (head, first, progress, back, again, later, latest)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        True,
    ]
    assert states(head, first, progress, back, again, later, latest) == [
        "pending",
        "pending",
        "pending",  # behind a later status change: not in the run ahead of the newest
        "pending",
        "pending",
        "superseded",
        "pending",
    ]


def test_an_attempted_message_is_not_superseded(make_task, receiver, clock):
    """A message made pending again by a resend (it was sent once) is not retired."""
    from apps.webhooks.services import delivery_resend

    task = make_task(notify_hook=receiver.url())
    [a] = change(task, status="IN_PROGRESS", progress=10)
    events_deliver(event_ids=[a.pk])
    [b] = change(task, status="IN_PROGRESS", progress=20)
    events_deliver(event_ids=[b.pk])
    # Resending ``a`` makes it the pending head again, holding ``c``, then ``d`` arrives.
    delivery_resend(organization=task.organization, delivery_id=a.deliveries.get().pk)
    [c] = change(task, status="IN_PROGRESS", progress=30)
    [d] = change(task, status="IN_PROGRESS", progress=40)
    assert states(a, b, c, d) == ["pending", "succeeded", "superseded", "pending"]
    # Resend ``b`` too: attempted before, so ``e`` does not retire it, only never-sent ones.
    delivery_resend(organization=task.organization, delivery_id=b.deliveries.get().pk)
    [e] = change(task, status="IN_PROGRESS", progress=50)
    assert states(a, b, d, e) == ["pending", "pending", "superseded", "pending"]
    assert b.deliveries.filter(state="pending").count() == 1


def test_a_worker_moving_on_to_a_superseded_successor_continues_down_the_chain(make_task, receiver):
    receiver.respond = lambda request: 503
    task = make_task(notify_hook=receiver.url())
    [head] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[head.pk])
    [started] = change(task, status="IN_PROGRESS", progress=10)
    [stale] = change(task, status="IN_PROGRESS", progress=20)
    [fresh] = change(task, status="IN_PROGRESS", progress=30)
    assert states(stale, fresh) == ["superseded", "pending"]
    # A worker that had picked ``stale`` as the next message before it was superseded.
    result = event_deliver(event_id=stale.pk, wait=True)
    assert (result.delivery, result.successor_id) == (None, fresh.pk)
    assert event_deliver(event_id=stale.pk).successor_id is None  # only when following a chain
    assert WebhookDelivery.objects.filter(event=stale).get().state == "superseded"
    assert started.deliveries.get().state == "pending"


def test_the_superseded_state_is_offered_as_a_delivery_filter():
    assert ("superseded", "Superseded (not sent)") in DeliveryState.choices
    assert EventState.SUPERSEDED == "superseded"
