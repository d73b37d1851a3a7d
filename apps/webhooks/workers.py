"""Celery entry points of the webhook outbox. Thin: ids in, one service call.

PostgreSQL holds the truth; a lost message only delays work the beat task finds again. Each
entry point imports its service inside the body, so nothing below imports this module and the
outbox never depends on Celery being configured. The module is named for what it is; Celery
finds it because ``config/celery.py`` autodiscovers ``workers`` modules as well as ``tasks``.
"""

from __future__ import annotations

from celery import shared_task

from apps.core.messaging import send_now

from .conf import DELIVER_DUE_TASK, DELIVER_TASK, PURGE_TASK

#: Messages per delivery task queued by the beat task: one delivery round sends this many at
#: once (``apps.webhooks.delivery.BATCH_SIZE``), each within its own ~15 s deadline.
DISPATCH_CHUNK = 64


@shared_task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
def deliver(event_ids: list[int]) -> None:
    # Lazy on purpose: an entry point imports its service in the body (module docstring).
    from .delivery import deliveries_drain

    # These messages first, then whatever else is due: the message is only a doorbell.
    deliveries_drain(event_ids=[int(event_id) for event_id in event_ids])


@shared_task(name=DELIVER_DUE_TASK, ignore_result=True)
def deliver_due() -> None:
    # Lazy on purpose: an entry point imports its service in the body (module docstring).
    from .delivery import deliveries_dispatch_due

    event_ids = deliveries_dispatch_due()
    for start in range(0, len(event_ids), DISPATCH_CHUNK):
        # Inside a Celery task, outside any transaction: the rows are committed already.
        send_now(DELIVER_TASK, event_ids[start : start + DISPATCH_CHUNK])


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge() -> None:
    # Lazy on purpose: an entry point imports its service in the body (module docstring).
    from .services import webhook_messages_purge

    webhook_messages_purge()
