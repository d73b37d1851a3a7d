"""Celery entry points. Thin: ids in, one service call; PostgreSQL holds the truth."""

from __future__ import annotations

from celery import shared_task

from .delivery import deliveries_dispatch_due, events_deliver
from .services import webhook_messages_purge

#: Messages per delivery task queued by the beat task (each attempt takes at most ~15 s).
DISPATCH_CHUNK = 5


@shared_task(name="webhooks.deliver", acks_late=True, ignore_result=True)
def deliver(event_ids: list[int]) -> None:
    events_deliver(event_ids=[int(event_id) for event_id in event_ids])


@shared_task(name="webhooks.deliver_due", ignore_result=True)
def deliver_due() -> None:
    event_ids = deliveries_dispatch_due()
    for start in range(0, len(event_ids), DISPATCH_CHUNK):
        deliver.delay(event_ids[start : start + DISPATCH_CHUNK])


@shared_task(name="webhooks.purge", ignore_result=True)
def purge() -> None:
    webhook_messages_purge()
