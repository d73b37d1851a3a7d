"""What holds on every attempt: the SSRF guard resolves and vets the host again (a DNS answer
that changes between attempts cannot reach our network), and no database transaction is open
while the receiver is being called."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from django.db import connections, transaction

from apps.core import http, http_wire
from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks import delivery as delivery_module
from apps.webhooks.conf import DEFAULT_RETRY_SCHEDULE
from apps.webhooks.delivery import events_deliver
from apps.webhooks.models import DeliveryState, EventState, WebhookDelivery, WebhookEndpoint


def change(task: Task, **fields: Any) -> list[Any]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type="task.updated")


@pytest.mark.django_db
def test_dns_rebinding_between_attempts_is_refused_without_a_request(
    make_task, receiver, clock, refuse_private, monkeypatch
):
    """First attempt: the name resolves to a public address. Second: to 127.0.0.1."""
    public = ipaddress.ip_address("93.184.216.34")
    answers = [[public], [ipaddress.ip_address("127.0.0.1")]]
    resolved: list[str] = []
    dialled: list[str] = []

    def resolve(host: str, port: int) -> list[Any]:
        resolved.append(host)
        return answers[min(len(resolved), len(answers)) - 1]

    def open_socket(address: str, port: int, timeout: float) -> socket.socket:
        # Stand in for the internet: the "public" host is our receiver, answering 503.
        dialled.append(address)
        assert address == str(public)
        return socket.create_connection(("127.0.0.1", receiver.port), timeout=timeout)

    monkeypatch.setattr(http, "resolve", resolve)
    monkeypatch.setattr(http_wire, "open_socket", open_socket)
    receiver.respond = lambda request: 503
    task = make_task(notify_hook=f"http://hooks.customer.example:{receiver.port}/hook")
    [event] = change(task, status="SUBMITTED")

    events_deliver(event_ids=[event.pk])
    assert (resolved, dialled, len(receiver.requests)) == (
        ["hooks.customer.example"],
        [str(public)],
        1,
    )
    assert receiver.requests[0]["headers"]["host"] == f"hooks.customer.example:{receiver.port}"

    clock.advance(DEFAULT_RETRY_SCHEDULE[0])
    events_deliver(event_ids=[event.pk])
    # Resolved again, refused, never dialled: the receiver saw no second connection.
    assert resolved == ["hooks.customer.example"] * 2
    assert dialled == [str(public)]
    assert receiver.connections == 1
    first, second = event.deliveries.order_by("attempt")
    assert (first.state, first.status_code) == (DeliveryState.FAILED, 503)
    assert (second.state, second.status_code) == (DeliveryState.DEAD, None)
    assert "non-public address" in second.error
    event.refresh_from_db()
    assert event.state == EventState.DEAD


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_the_receiver_is_called(
    organization, make_task, receiver, allow_private, monkeypatch
):
    WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    task = make_task(notify_hook=receiver.url("/hook"))
    seen: list[tuple[bool, bool]] = []
    # The sends run in the delivery's sending threads: what matters is the connection of the
    # thread that claimed and will record the batch.
    worker_connection = connections["default"]
    real = delivery_module._session.request

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append((worker_connection.in_atomic_block, worker_connection.get_autocommit()))
        return real(*args, **kwargs)

    monkeypatch.setattr(delivery_module._session, "request", watched)
    receiver.respond = lambda request: 503 if len(receiver.requests) < 2 else 200
    events = change(task, status="SUBMITTED")
    events_deliver(event_ids=[e.pk for e in events])  # both fail: the failure path
    WebhookDelivery.objects.filter(state="pending").update(next_attempt_at=events[0].created_at)
    events_deliver(event_ids=[e.pk for e in events])  # both succeed
    assert len(receiver.requests) == 4
    assert seen == [(False, True)] * 4
