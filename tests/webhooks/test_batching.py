"""Cheap deliveries (issue 15, P4): a batch claimed in one statement, sent concurrently over
kept-alive connections, recorded in a few statements; the SSRF guard still vets every request."""

from __future__ import annotations

import ipaddress
import socket
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.core import http, http_wire
from apps.core.http import SafeSession, UnsafeURL
from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks import delivery as delivery_module
from apps.webhooks.conf import CLAIM_LEASE
from apps.webhooks.delivery import deliveries_drain, events_deliver
from apps.webhooks.models import DeliveryState, EventState, WebhookDelivery, WebhookEvent
from apps.webhooks.services import webhook_secret_ensure

from .conftest import T0

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private", "fresh_pool")]


def publish(task: Task, **fields: Any) -> list[WebhookEvent]:
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type="task.updated")


def many(make_task: Any, url: str, count: int) -> list[WebhookEvent]:
    return [publish(make_task(notify_hook=url), status="SUBMITTED")[0] for _ in range(count)]


def test_a_batch_is_claimed_in_one_statement(make_task, receiver, clock):
    events = many(make_task, receiver.url(), 30)
    with CaptureQueriesContext(connection) as queries:
        claims = delivery_module._claim_batch(clock.now, limit=64)
    assert len(queries) == 1
    assert sorted(c.event_id for c in claims) == sorted(e.pk for e in events)
    assert all(c.url == receiver.url() and c.body for c in claims)
    # Leased: a second worker finds nothing to claim.
    assert delivery_module._claim_batch(clock.now, limit=64) == []
    attempts = WebhookDelivery.objects.filter(event__in=events)
    assert {(a.attempted_at, a.claim_token) for a in attempts} == {(T0, claims[0].token)}


def test_a_held_message_is_not_claimed_with_its_predecessor(make_task, receiver, clock):
    task = make_task(notify_hook=receiver.url())
    first = publish(task, status="SUBMITTED")[0]
    second = publish(task, status="IN_PROGRESS", progress=50)[0]
    claims = delivery_module._claim_batch(clock.now, limit=64)
    assert [c.event_id for c in claims] == [first.pk]
    # The claim's worker died; after its lease the next round sends both, in order.
    clock.advance(CLAIM_LEASE.total_seconds())
    attempted = events_deliver(event_ids=[second.pk, first.pk])
    assert [a.event_id for a in attempted] == [first.pk, second.pk]
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [first.msg_id, second.msg_id]


def test_delivering_a_batch_costs_a_few_statements_in_all(organization, make_task, receiver, clock):
    webhook_secret_ensure(organization=organization)  # made once, on the first message
    events = many(make_task, receiver.url(), 40)
    with CaptureQueriesContext(connection) as queries:
        attempted = events_deliver(event_ids=[e.pk for e in events])
    assert len(attempted) == 40
    assert {a.error for a in attempted} == {""}
    assert {a.state for a in attempted} == {DeliveryState.SUCCEEDED}
    assert len(receiver.requests) == 40
    # Claim, signing secrets, lock the messages, record the attempts, finish the messages,
    # look for successors, and the final read of the attempts returned: for all 40 together
    # (plus the savepoint statements of the test's transaction).
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 8, "\n".join(s[:70] for s in statements)
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {EventState.SUCCEEDED}


def test_a_failing_batch_schedules_its_retries_together(organization, make_task, receiver, clock):
    webhook_secret_ensure(organization=organization)
    receiver.respond = lambda request: 503
    events = many(make_task, receiver.url(), 10)
    with CaptureQueriesContext(connection) as queries:
        events_deliver(event_ids=[e.pk for e in events])
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 8, statements
    retries = WebhookDelivery.objects.filter(state=DeliveryState.PENDING)
    assert sorted(r.event_id for r in retries) == sorted(e.pk for e in events)
    assert {(r.attempt, r.next_attempt_at) for r in retries} == {(2, T0 + timedelta(seconds=5))}


def test_the_sends_of_a_batch_run_at_the_same_time(make_task, receiver, clock):
    # Each request waits until four are in flight together: sent one after another, the first
    # would wait in vain, time out and answer 500.
    together = threading.Barrier(4, timeout=10)

    def respond(request: dict[str, Any]) -> int:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            return 500
        return 200

    receiver.respond = respond
    events = many(make_task, receiver.url(), 4)
    attempted = events_deliver(event_ids=[e.pk for e in events])
    assert [a.status_code for a in attempted] == [200] * 4


def test_one_slow_receiver_times_out_alone(make_task, receiver, clock, settings):
    settings.WEBHOOK_READ_TIMEOUT = 0.3
    settings.WEBHOOK_TOTAL_TIMEOUT = 1.0
    release = threading.Event()

    def respond(request: dict[str, Any]) -> int:
        if request["path"] == "/slow":
            release.wait(10)
        return 200

    receiver.respond = respond
    slow = publish(make_task(notify_hook=receiver.url("/slow")), status="SUBMITTED")[0]
    fast = many(make_task, receiver.url("/fast"), 5)
    try:
        attempted = events_deliver(event_ids=[slow.pk, *(e.pk for e in fast)])
    finally:
        release.set()
    by_event = {a.event_id: a for a in attempted}
    assert by_event[slow.pk].state == DeliveryState.FAILED
    assert "timed out" in by_event[slow.pk].error
    assert all(by_event[e.pk].state == DeliveryState.SUCCEEDED for e in fast)


def test_connections_are_kept_alive_between_deliveries(
    make_task, keep_alive_receiver, clock, fresh_pool
):
    receiver = keep_alive_receiver
    for _ in range(6):
        [event] = many(make_task, receiver.url(), 1)
        [attempt] = events_deliver(event_ids=[event.pk])
        assert attempt.state == DeliveryState.SUCCEEDED
    assert len(receiver.requests) == 6
    assert receiver.connections == 1
    assert fresh_pool.connections_opened == 1


def test_the_worker_drains_every_due_attempt(make_task, receiver, clock):
    events = many(make_task, receiver.url(), 70)  # more than one batch
    assert deliveries_drain(event_ids=[events[0].pk]) == 70
    assert len(receiver.requests) == 70
    assert deliveries_drain() == 0


def test_a_pooled_connection_is_reused_only_to_an_address_vetted_for_the_request(
    keep_alive_receiver, monkeypatch
):
    """The name moves between addresses: each request resolves and vets again, and only a
    connection to an address vetted this time is reused; a refused address is never dialled."""
    receiver = keep_alive_receiver
    first, second = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("93.184.216.35")
    metadata = ipaddress.ip_address("169.254.169.254")
    answer: list[Any] = [first]
    dialled: list[str] = []

    def resolve(host: str, port: int) -> list[Any]:
        return list(answer)

    def open_socket(address: str, port: int, timeout: float) -> socket.socket:
        dialled.append(address)  # stands in for the internet: every address is our receiver
        return socket.create_connection(("127.0.0.1", receiver.port), timeout=timeout)

    monkeypatch.setattr(http, "resolve", resolve)
    monkeypatch.setattr(http_wire, "open_socket", open_socket)
    session = SafeSession()
    url = f"http://hooks.customer.example:{receiver.port}/hook"

    def post() -> int:
        return session.request("POST", url, content=b"{}", allow_private=False).status

    assert [post(), post()] == [200, 200]
    assert dialled == [str(first)]  # the second request reused the connection
    answer[:] = [second]
    assert post() == 200
    assert dialled == [str(first), str(second)]  # moved: a new connection to the new address
    answer[:] = [metadata]
    with pytest.raises(UnsafeURL):
        post()
    assert dialled == [str(first), str(second)]  # refused before any connection was used
    answer[:] = [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(UnsafeURL):
        post()
    assert dialled == [str(first), str(second)]
    answer[:] = [second]
    assert post() == 200
    assert len(receiver.requests) == 4
    session.close()


def test_a_slow_receiver_holds_only_its_own_slot(make_task, receiver, clock, settings, monkeypatch):
    """Two sends in flight at most: while one receiver keeps its request open, every other
    message still goes out through the other slot. The slow receiver answers only once it has
    seen them all, so a loop that waited for its whole batch would never get there: the slow
    request would run into its read timeout instead."""
    monkeypatch.setattr(delivery_module, "BATCH_SIZE", 2)
    monkeypatch.setattr(delivery_module, "GATHER_SECONDS", 0.05)
    settings.WEBHOOK_READ_TIMEOUT = 20.0
    settings.WEBHOOK_TOTAL_TIMEOUT = 25.0
    others_seen = threading.Event()
    fast_count = [0]
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> int:
        if request["path"] == "/slow":
            return 200 if others_seen.wait(30) else 500
        with lock:
            fast_count[0] += 1
            if fast_count[0] == 4:
                others_seen.set()
        return 200

    receiver.respond = respond
    slow = publish(make_task(notify_hook=receiver.url("/slow")), status="SUBMITTED")[0]
    fast = many(make_task, receiver.url("/fast"), 4)
    clock.advance(1)
    assert deliveries_drain() == 5
    states = dict(WebhookDelivery.objects.values_list("event_id", "state"))
    assert states == {e.pk: DeliveryState.SUCCEEDED for e in [slow, *fast]}
    assert [r["path"] for r in receiver.requests][-1] == "/slow"
