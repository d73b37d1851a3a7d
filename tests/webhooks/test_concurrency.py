"""Several workers at once never send one attempt twice (PostgreSQL, real transactions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.delivery import deliveries_dispatch_due, event_deliver
from apps.webhooks.models import DeliveryState, WebhookDelivery

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


def in_threads(count: int, work: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    return results


def test_racing_workers_send_one_attempt_once(make_task, receiver, clock):
    task = make_task(notify_hook=receiver.url())
    with transaction.atomic():
        [event] = task_changed(task=task, event_type="task.updated")
    results = in_threads(8, lambda: event_deliver(event_id=event.pk))
    assert sum(1 for r in results if r.delivery is not None) == 1
    assert len(receiver.requests) == 1
    [attempt] = WebhookDelivery.objects.filter(event=event)
    assert attempt.state == DeliveryState.SUCCEEDED


def test_racing_beat_runs_queue_each_attempt_once(make_task, receiver, clock):
    events = []
    for _ in range(20):
        task = make_task(notify_hook=receiver.url())
        with transaction.atomic():
            events.extend(task_changed(task=task, event_type="task.updated"))
    clock.advance(61)  # past the dispatch lease of the on-commit sends
    results = in_threads(4, deliveries_dispatch_due)
    queued = [event_id for batch in results for event_id in batch]
    assert sorted(queued) == sorted(e.pk for e in events)
    assert Task.objects.count() == 20
