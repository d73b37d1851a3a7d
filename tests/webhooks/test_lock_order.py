"""Writers of a message and its attempts lock them in one order: the message first, then its
attempts (PostgreSQL, real transactions). A writer that took them the other way round could
deadlock with another, and PostgreSQL would abort one of the two: a lost resend, or a whole
delivery round whose outcomes are never recorded (and so sent again after the lease)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks import clock as webhook_clock
from apps.webhooks import delivery as delivery_module
from apps.webhooks.models import DeliveryState, EventState, WebhookDelivery, WebhookEvent
from apps.webhooks.services import delivery_resend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_private"),
]


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # The on-commit sends would go to Redis; these tests drive the workers themselves.
    from apps.webhooks.workers import deliver

    monkeypatch.setattr(deliver, "apply_async", lambda args, **options: None)


def change(task: Task, **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type="task.updated")


def _waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def race_with_resend(
    monkeypatch: pytest.MonkeyPatch, *, organization: Any, delivery_id: int, other: Any
) -> list[BaseException]:
    """Run ``delivery_resend`` of ``delivery_id`` held between its two locks (the message's,
    then its attempt's) until ``other``, run meanwhile in a thread of its own, waits on a lock;
    then let both finish. Returns what either raised."""
    connection.close()  # the threads open their own connections
    real_now = webhook_clock.now
    resend_holds_the_message = threading.Event()
    go_on = threading.Event()
    resender: list[threading.Thread] = []

    def now() -> Any:
        if resender and threading.current_thread() is resender[0] and not go_on.is_set():
            resend_holds_the_message.set()  # called between the message lock and the attempt's
            go_on.wait(10)
        return real_now()

    monkeypatch.setattr(webhook_clock, "now", now)
    errors: list[BaseException] = []

    def run(work: Any) -> None:
        try:
            work()
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)
        finally:
            connection.close()

    resender.append(
        threading.Thread(
            target=run,
            args=(lambda: delivery_resend(organization=organization, delivery_id=delivery_id),),
        )
    )
    second = threading.Thread(target=run, args=(other,))
    resender[0].start()
    assert resend_holds_the_message.wait(10)
    second.start()
    deadline = time.monotonic() + 10
    while _waiting_on_a_lock() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    go_on.set()
    resender[0].join(30)
    second.join(30)
    connection.close()
    monkeypatch.setattr(webhook_clock, "now", real_now)
    return errors


def test_a_410_killing_a_chain_and_a_resend_of_its_next_message_both_complete(
    make_task, receiver, monkeypatch
):
    """The resend locks the next message, then its attempt; recording the 410 ends the chain
    (that attempt, that message)."""
    task = make_task(notify_hook=receiver.url())
    [first] = change(task, status="SUBMITTED")
    [second] = change(task, status="IN_PROGRESS", progress=10)
    [claim] = delivery_module._claim_batch(webhook_clock.now(), event_ids=[first.pk])
    next_attempt = WebhookDelivery.objects.get(event=second)

    def record_410() -> None:
        gone = delivery_module._Outcome(success=False, status_code=410, error="HTTP 410")
        delivery_module._record_batch([(claim, gone)])

    errors = race_with_resend(
        monkeypatch, organization=task.organization, delivery_id=next_attempt.pk, other=record_410
    )

    assert errors == []
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (EventState.DEAD, EventState.DEAD)
    next_attempt.refresh_from_db()
    assert next_attempt.state == DeliveryState.DEAD
    assert receiver.requests == []


def test_superseding_a_held_progress_message_and_its_resend_both_complete(
    make_task, receiver, monkeypatch
):
    """The task's next progress supersedes the held progress message (its message and its
    attempt) while a resend of that message holds it."""
    task = make_task(notify_hook=receiver.url())
    change(task, status="SUBMITTED")  # the chain's head: not delivered, so the rest is held
    change(task, status="IN_PROGRESS", progress=10)
    [held] = change(task, status="IN_PROGRESS", progress=20)
    held_attempt = WebhookDelivery.objects.get(event=held)
    published: list[WebhookEvent] = []

    def next_progress() -> None:
        published.extend(change(task, status="IN_PROGRESS", progress=30))

    errors = race_with_resend(
        monkeypatch,
        organization=task.organization,
        delivery_id=held_attempt.pk,
        other=next_progress,
    )

    assert errors == []
    assert len(published) == 1
    held.refresh_from_db()
    held_attempt.refresh_from_db()
    assert (held.state, held_attempt.state) == (EventState.SUPERSEDED, DeliveryState.SUPERSEDED)
    assert receiver.requests == []
