"""Webhooks through a real Celery worker on Redis and PostgreSQL (not eager).

The test process changes tasks and publishes in committed transactions, exactly as the task
engine does; the on-commit send goes to Redis and the worker subprocess delivers to a receiver
on loopback (the worker runs with WEBHOOKS_ALLOW_PRIVATE_ADDRESSES=true).
"""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks.models import EventState, WebhookEndpoint, WebhookEvent
from apps.webhooks.services import webhook_secret_ensure
from tests.integration_support import WAIT_TIMEOUT

from .conftest import body, verify

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


def wait_for(condition, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_worker_delivers_every_change_in_order_signed(
    celery_worker_factory, organization, make_task, receiver
):
    celery_worker_factory(WEBHOOKS_ALLOW_PRIVATE_ADDRESSES="true")
    _, secret = webhook_secret_ensure(organization=organization)
    WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    task = make_task(notify_hook=receiver.url("/hook"))
    steps = [("SUBMITTED", 0), *[("IN_PROGRESS", p) for p in range(10, 100, 10)], ("SUCCESS", 100)]
    for status, progress in steps:
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(status=status, progress=progress)
            task_changed(task=task)

    wait_for(lambda: not WebhookEvent.objects.filter(state=EventState.PENDING).exists())
    assert WebhookEvent.objects.count() == 2 * len(steps)
    delivered = set(
        WebhookEvent.objects.filter(state=EventState.SUCCEEDED).values_list("msg_id", flat=True)
    )
    # Progress steps that queued up behind one still being sent may have been superseded by a
    # newer one; nothing else is ever skipped.
    superseded = WebhookEvent.objects.filter(state=EventState.SUPERSEDED)
    assert delivered | set(superseded.values_list("msg_id", flat=True)) == set(
        WebhookEvent.objects.values_list("msg_id", flat=True)
    )
    assert all(event.progress_only for event in superseded)
    hook = receiver.on("/hook")
    org = receiver.on("/org")
    # Eight worker threads raced for these; the receiver still saw them in order, once each:
    # every status change, the progress steps that were not superseded, and the last one.
    for seen in (
        [(body(r)["status"], body(r)["progress"]) for r in hook],
        [(body(r)["data"]["status"], body(r)["data"]["progress"]) for r in org],
    ):
        assert seen[:2] == steps[:2]
        assert seen[-1] == steps[-1]
        assert seen == [step for step in steps if step in seen]  # in order, none repeated
    assert [body(r)["type"] for r in org][-1] == "task.succeeded"
    for request in hook + org:
        verify(secret, request)
    ids = [r["headers"]["webhook-id"] for r in hook + org]
    assert len(ids) == len(set(ids)) == len(delivered)
