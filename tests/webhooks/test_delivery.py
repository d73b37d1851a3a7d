"""Delivering outbox messages to a real receiver on loopback (SPEC §7 acceptance)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import transaction
from standardwebhooks.webhooks import WebhookVerificationError

from apps.accounts.models import Role
from apps.tasks.events import task_changed
from apps.tasks.models import Task
from apps.webhooks import delivery as delivery_module
from apps.webhooks.conf import CLAIM_LEASE, DEFAULT_RETRY_SCHEDULE, DISPATCH_LEASE
from apps.webhooks.delivery import deliveries_dispatch_due, event_deliver, events_deliver
from apps.webhooks.models import (
    DeliveryState,
    DeliveryTrigger,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import (
    delivery_resend,
    endpoint_send_test_event,
    webhook_secret_ensure,
    webhook_secret_rotate,
)
from apps.webhooks.workers import deliver_due
from tests.factories import MembershipFactory

from .conftest import T0, Receiver, body, verify

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private")]


def change(task: Task, **fields: Any) -> list[WebhookEvent]:
    """What the task engine does: change the task and publish, in one transaction."""
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(**fields)
        return task_changed(task=task, event_type=fields.pop("event_type", None))


@pytest.fixture
def publish(broker: Any) -> Any:
    """Change a task and publish, then commit (which queues the delivery task)."""

    def publish(task: Task, **fields: Any) -> list[WebhookEvent]:
        return broker.committed(change, task, **fields)

    return publish


@pytest.fixture
def secret(organization: Any) -> str:
    _, plaintext = webhook_secret_ensure(organization=organization)
    assert plaintext is not None
    return plaintext


def test_receiver_gets_every_status_change_in_order_verified(
    organization, make_task, receiver, secret, celery_eager, django_capture_on_commit_callbacks
):
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    task = make_task(notify_hook=receiver.url("/hook"), state="client-state", protocol="mjproxy")
    steps = [
        {"status": "NOT_START"},
        {"status": "SUBMITTED"},
        {"status": "IN_PROGRESS", "progress": 25},
        {"status": "IN_PROGRESS", "progress": 75},
        {"status": "SUCCESS", "progress": 100},
    ]
    published = []
    for step in steps:
        # Celery runs eagerly: the on-commit callback queues the real delivery task.
        with django_capture_on_commit_callbacks(execute=True):
            published.append(change(task, **step))

    hook_requests = receiver.on("/hook")
    assert len(hook_requests) == 5
    for request, events in zip(hook_requests, published, strict=True):
        assert verify(secret, request) == body(request)
        assert request["headers"]["webhook-id"] == events[0].msg_id
        assert request["headers"]["content-type"] == "application/json"
    # mj-proxy Task JSON (the dialect the task was created with), statuses in order.
    assert [body(r)["status"] for r in hook_requests] == [s["status"] for s in steps]
    assert [body(r)["progress"] for r in hook_requests] == ["0%", "0%", "25%", "75%", "100%"]
    assert {body(r)["state"] for r in hook_requests} == {"client-state"}

    org_requests = receiver.on("/org")
    assert [body(r)["type"] for r in org_requests] == [
        "task.updated",
        "task.updated",
        "task.updated",
        "task.updated",
        "task.succeeded",
    ]
    assert [body(r)["data"]["status"] for r in org_requests] == [s["status"] for s in steps]
    for request in org_requests:
        verify(secret, request)
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {EventState.SUCCEEDED}
    attempts = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id")
    assert [(a.state, a.status_code, a.attempt) for a in attempts] == [("succeeded", 200, 1)] * 5
    assert all(a.response_body == '{"received":true}' for a in attempts)
    assert all(a.latency_ms is not None and a.latency_ms >= 0 for a in attempts)


def test_a_later_message_waits_for_the_earlier_one(make_task, receiver, secret, clock):
    task = make_task(notify_hook=receiver.url())
    first = change(task, status="SUBMITTED")[0]
    second = change(task, status="IN_PROGRESS", progress=50)[0]
    third = change(task, status="SUCCESS", progress=100)[0]
    # Workers pick the messages up in the worst order.
    assert event_deliver(event_id=third.pk).delivery is None
    assert event_deliver(event_id=second.pk).delivery is None
    assert receiver.requests == []
    # The beat task does not queue held messages either.
    clock.advance(DISPATCH_LEASE.total_seconds() + 1)
    assert deliveries_dispatch_due() == [first.pk]
    attempted = events_deliver(event_ids=[first.pk])
    assert [a.event_id for a in attempted] == [first.pk, second.pk, third.pk]
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [
        first.msg_id,
        second.msg_id,
        third.msg_id,
    ]
    assert [body(r)["status"] for r in receiver.requests] == ["SUBMITTED", "IN_PROGRESS", "SUCCESS"]


def test_receiver_down_for_an_hour_gets_everything_afterwards_at_the_scheduled_attempts(
    make_task, receiver, secret, clock, broker, publish
):
    back_up = T0 + timedelta(hours=1)
    receiver.respond = lambda request: 200 if clock.now >= back_up else 503
    task = make_task(notify_hook=receiver.url())
    first = publish(task, status="SUBMITTED")[0]
    second = publish(task, status="IN_PROGRESS", progress=50)[0]
    third = publish(task, status="SUCCESS", progress=100)[0]
    broker.run()  # the delivery tasks queued on commit

    # Walk the clock through every due time, running beat and the workers each second around
    # it: a run a second early does nothing.
    expected_times = [T0]
    elapsed = 0
    for delay in DEFAULT_RETRY_SCHEDULE[:4]:  # 5 s, 5 min, 30 min, 2 h → up at the 5th try
        elapsed += delay
        expected_times.append(T0 + timedelta(seconds=elapsed))
    for due in expected_times[1:]:
        clock.set(due - timedelta(seconds=1))
        before = len(receiver.requests)
        broker.beat()
        assert len(receiver.requests) == before
        clock.set(due)
        broker.beat()

    first_requests = [r for r in receiver.requests if r["headers"]["webhook-id"] == first.msg_id]
    assert [r["answered"] for r in first_requests] == [503, 503, 503, 503, 200]
    assert len({r["body"] for r in first_requests}) == 1
    for request in first_requests:
        verify(secret, request)  # signed afresh each time, same webhook-id and body
    attempts = list(first.deliveries.order_by("attempt"))
    assert [a.attempted_at for a in attempts] == expected_times
    assert [a.next_attempt_at for a in attempts] == expected_times
    assert [(a.attempt, a.state, a.status_code) for a in attempts] == [
        (1, "failed", 503),
        (2, "failed", 503),
        (3, "failed", 503),
        (4, "failed", 503),
        (5, "succeeded", 200),
    ]
    assert attempts[0].error == "HTTP 503"
    assert attempts[0].response_body == "nope"
    # The later messages were held back, then delivered right after, in order, once each.
    assert [r["headers"]["webhook-id"] for r in receiver.requests[-3:]] == [
        first.msg_id,
        second.msg_id,
        third.msg_id,
    ]
    assert len(receiver.requests) == 7
    for event in (second, third):
        [attempt] = event.deliveries.all()
        assert attempt.attempted_at == expected_times[-1]
        assert attempt.state == DeliveryState.SUCCEEDED
        verify(secret, receiver.requests[-1])
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {EventState.SUCCEEDED}
    clock.advance(86400)
    broker.beat()
    assert len(receiver.requests) == 7


def test_a_message_dies_after_the_last_scheduled_retry(make_task, receiver, clock, broker, publish):
    receiver.respond = lambda request: 500
    task = make_task(notify_hook=receiver.url())
    [event] = publish(task, status="SUBMITTED")
    broker.run()
    expected = [T0]
    for delay in DEFAULT_RETRY_SCHEDULE:
        clock.set(expected[-1] + timedelta(seconds=delay))
        expected.append(clock.now)
        broker.beat()
    attempts = list(event.deliveries.order_by("attempt"))
    assert [a.attempted_at for a in attempts] == expected
    assert [a.state for a in attempts] == ["failed"] * 7 + ["dead"]
    assert len(receiver.requests) == 8
    event.refresh_from_db()
    assert event.state == EventState.DEAD
    assert event.finished_at == expected[-1]
    clock.advance(7 * 86400)
    broker.beat()
    assert len(receiver.requests) == 8


def test_410_disables_the_endpoint_at_once_and_tells_the_owners(
    organization, owner, admin_user, make_task, receiver, clock, broker, publish
):
    receiver.respond = lambda request: 410
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    task = make_task()
    first = publish(task, status="SUBMITTED")[0]
    second = publish(task, status="IN_PROGRESS", progress=10)[0]
    broker.run()

    endpoint.refresh_from_db()
    assert endpoint.is_enabled is False
    assert endpoint.disabled_reason == "The endpoint answered 410 Gone."
    assert endpoint.disabled_at == T0
    [attempt] = first.deliveries.all()
    assert (attempt.state, attempt.status_code) == ("dead", 410)
    # The held message was not sent to the disabled endpoint.
    [held] = second.deliveries.all()
    assert held.state == DeliveryState.DEAD
    assert held.status_code is None
    assert held.error == "Not sent: the endpoint is disabled."
    assert len(receiver.requests) == 1
    [message] = mail.outbox
    assert message.to == [owner.email]  # owners only, not admins
    assert admin_user.email not in message.to
    assert receiver.url("/org") in message.body
    # New changes are not even written for a disabled endpoint.
    assert publish(task, status="SUCCESS", progress=100) == []
    clock.advance(86400)
    assert broker.beat() == 0
    assert len(receiver.requests) == 1


def test_410_on_a_task_hook_stops_further_messages_for_that_hook(make_task, receiver):
    receiver.respond = lambda request: 410
    task = make_task(notify_hook=receiver.url())
    first = change(task, status="SUBMITTED")[0]
    second = change(task, status="IN_PROGRESS", progress=10)[0]
    events_deliver(event_ids=[first.pk, second.pk])
    assert len(receiver.requests) == 1
    second.refresh_from_db()
    assert second.state == EventState.DEAD
    assert second.deliveries.get().error == (
        "Not sent: the hook answered 410 Gone to an earlier message."
    )


def test_a_redirect_is_not_followed_and_counts_as_a_failure(make_task, receiver, clock):
    target = Receiver()
    try:
        receiver.respond = lambda request: 302
        receiver.location = target.url("/elsewhere")
        task = make_task(notify_hook=receiver.url())
        [event] = change(task, status="SUBMITTED")
        events_deliver(event_ids=[event.pk])
        assert target.connections == 0
        assert len(receiver.requests) == 1
        first, retry = event.deliveries.order_by("attempt")
        assert (first.state, first.status_code) == ("failed", 302)
        assert first.error == "HTTP 302: redirects are not followed."
        assert (retry.state, retry.next_attempt_at) == ("pending", T0 + timedelta(seconds=5))
    finally:
        target.close()


def test_refused_private_address_kills_the_message_without_a_request(make_task, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    assert receiver.connections == 0
    [attempt] = event.deliveries.all()
    assert attempt.state == DeliveryState.DEAD
    assert attempt.status_code is None
    assert "non-public address" in attempt.error


def test_connection_refused_is_retried(make_task, clock):
    from .conftest import free_port

    task = make_task(notify_hook=f"http://127.0.0.1:{free_port()}/hook")
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    first, retry = event.deliveries.order_by("attempt")
    assert first.state == DeliveryState.FAILED
    assert first.status_code is None
    assert "failed" in first.error
    assert retry.state == DeliveryState.PENDING


def test_rotation_overlap_signs_with_both_secrets(organization, make_task, receiver, secret, clock):
    task = make_task(notify_hook=receiver.url())
    clock.advance(60)
    new_secret = webhook_secret_rotate(organization=organization)
    assert new_secret.startswith("whsec_") and new_secret != secret
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    [request] = receiver.requests
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    assert verify(secret, request) == body(request)
    assert verify(new_secret, request) == body(request)

    clock.advance(24 * 3600 + 1)  # the overlap window is over
    [event] = change(task, status="IN_PROGRESS", progress=5)
    events_deliver(event_ids=[event.pk])
    latest = receiver.requests[-1]
    assert len(latest["headers"]["webhook-signature"].split(" ")) == 1
    assert verify(new_secret, latest) == body(latest)
    with pytest.raises(WebhookVerificationError):
        verify(secret, latest)


def test_rotating_twice_retires_the_oldest_secret_now(organization, make_task, receiver, secret):
    second = webhook_secret_rotate(organization=organization)
    third = webhook_secret_rotate(organization=organization)
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    [request] = receiver.requests
    verify(second, request)
    verify(third, request)
    with pytest.raises(WebhookVerificationError):
        verify(secret, request)


@pytest.mark.django_db(transaction=True)
def test_a_lost_delivery_task_is_recovered_by_deliver_due(
    make_task, receiver, secret, clock, celery_eager, monkeypatch
):
    """Kill between commit and delivery: the outbox row is committed, the Celery task never runs."""
    from apps.webhooks.workers import deliver

    real_apply_async = deliver.apply_async
    lost = {"now": True}
    monkeypatch.setattr(
        deliver,
        "apply_async",
        lambda *args, **options: None if lost["now"] else real_apply_async(*args, **options),
    )
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")  # really committed; its on-commit send is lost
    assert WebhookEvent.objects.filter(pk=event.pk, state="pending").exists()
    assert receiver.requests == []

    # The beat task (real task code, run eagerly) leaves freshly queued work alone for the
    # dispatch lease …
    lost["now"] = False
    clock.advance(DISPATCH_LEASE.total_seconds() - 1)
    deliver_due()
    assert receiver.requests == []
    # … then finds it in the database and delivers it.
    clock.advance(2)
    deliver_due()
    [request] = receiver.requests
    assert request["headers"]["webhook-id"] == event.msg_id
    verify(secret, request)
    event.refresh_from_db()
    assert event.state == EventState.SUCCEEDED


def test_a_worker_killed_mid_request_is_recovered_after_its_lease(
    make_task, receiver, clock, broker, publish
):
    task = make_task(notify_hook=receiver.url())
    [event] = publish(task, status="SUBMITTED")
    broker.queue.clear()  # the worker took the message off the queue
    # A worker claims the attempt and dies before sending or recording anything.
    [claimed] = delivery_module._claim_batch(clock.now, event_ids=[event.pk])
    assert claimed.event_id == event.pk
    clock.advance(DISPATCH_LEASE.total_seconds() + 1)
    assert deliveries_dispatch_due() == []  # still within the dead worker's claim
    clock.set(T0 + CLAIM_LEASE)
    broker.beat()
    [request] = receiver.requests
    assert request["headers"]["webhook-id"] == event.msg_id
    [attempt] = event.deliveries.all()
    assert attempt.state == DeliveryState.SUCCEEDED
    assert attempt.attempted_at == T0 + CLAIM_LEASE


def test_an_outcome_recorded_after_losing_the_lease_is_discarded(
    make_task, receiver, clock, broker, publish
):
    task = make_task(notify_hook=receiver.url())
    [event] = publish(task, status="SUBMITTED")
    broker.queue.clear()
    [slow] = delivery_module._claim_batch(clock.now, event_ids=[event.pk])
    clock.set(T0 + CLAIM_LEASE)
    broker.beat()  # another worker takes over and succeeds
    outcome = delivery_module._Outcome(success=False, status_code=500, error="HTTP 500")
    result = delivery_module._record_batch([(slow, outcome)])
    assert result.delivery_ids == []
    [attempt] = event.deliveries.all()
    assert attempt.state == DeliveryState.SUCCEEDED


def test_failing_for_days_disables_the_endpoint_and_emails_owners(
    organization, owner, member, make_task, receiver, clock, broker, publish
):
    second_owner = MembershipFactory(organization=organization, role=Role.OWNER).user
    receiver.respond = lambda request: 500
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))

    def fail_once() -> None:
        publish(make_task(), status="SUBMITTED")
        broker.run()

    fail_once()
    endpoint.refresh_from_db()
    assert endpoint.failing_since == T0
    clock.set(T0 + timedelta(days=5) - timedelta(seconds=1))
    fail_once()
    endpoint.refresh_from_db()
    assert endpoint.is_enabled is True
    assert mail.outbox == []
    clock.set(T0 + timedelta(days=5))
    fail_once()
    endpoint.refresh_from_db()
    assert endpoint.is_enabled is False
    assert endpoint.disabled_at == T0 + timedelta(days=5)
    assert endpoint.disabled_reason == (
        "Every delivery failed for 5 days (since 2030-01-01 12:00 UTC)."
    )
    [message] = mail.outbox
    assert sorted(message.to) == sorted([owner.email, second_owner.email])
    assert member.email not in message.to
    assert "disabled" in message.subject


def test_a_success_ends_the_failure_streak(
    organization, make_task, receiver, clock, broker, publish
):
    answers = iter([500, 200])
    receiver.respond = lambda request: next(answers)
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    publish(make_task(), status="SUBMITTED")
    broker.run()
    endpoint.refresh_from_db()
    assert endpoint.failing_since == T0
    clock.advance(5)
    broker.run()  # the short retry was queued with a countdown
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None
    assert endpoint.is_enabled is True


def test_resend_of_a_dead_message_is_one_manual_attempt_with_the_same_id(
    organization,
    make_task,
    receiver,
    secret,
    clock,
    celery_eager,
    django_capture_on_commit_callbacks,
):
    receiver.respond = lambda request: 400
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    for delay in (0, *DEFAULT_RETRY_SCHEDULE):
        clock.advance(delay)
        events_deliver(event_ids=[event.pk])
    event.refresh_from_db()
    assert event.state == EventState.DEAD
    last = event.deliveries.order_by("-attempt").first()
    assert last.attempt == 8

    receiver.respond = lambda request: 204
    with django_capture_on_commit_callbacks(execute=True):
        resent = delivery_resend(organization=organization, delivery_id=last.pk)
    resent.refresh_from_db()
    assert (resent.attempt, resent.trigger, resent.state) == (9, "manual", "succeeded")
    assert resent.status_code == 204
    assert receiver.requests[-1]["headers"]["webhook-id"] == event.msg_id
    verify(secret, receiver.requests[-1])
    event.refresh_from_db()
    assert event.state == EventState.SUCCEEDED

    # A failed manual attempt is not retried.
    receiver.respond = lambda request: 500
    with django_capture_on_commit_callbacks(execute=True):
        again = delivery_resend(organization=organization, delivery_id=resent.pk)
    again.refresh_from_db()
    assert (again.attempt, again.state) == (10, "dead")
    assert event.deliveries.filter(state="pending").count() == 0


def test_resend_brings_a_scheduled_retry_forward(
    organization, make_task, receiver, clock, celery_eager, django_capture_on_commit_callbacks
):
    receiver.respond = lambda request: 503
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    first, pending = event.deliveries.order_by("attempt")
    receiver.respond = lambda request: 200
    with django_capture_on_commit_callbacks(execute=True):
        resent = delivery_resend(organization=organization, delivery_id=first.pk)
    assert resent.pk == pending.pk
    resent.refresh_from_db()
    assert (resent.attempt, resent.trigger, resent.state) == (2, "auto", "succeeded")
    assert resent.attempted_at == T0
    assert event.deliveries.count() == 2


def test_resend_of_a_foreign_delivery_is_not_found_and_changes_nothing(
    organization, other_organization, make_task, receiver
):
    from apps.core.errors import NotFound

    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    events_deliver(event_ids=[event.pk])
    [attempt] = event.deliveries.all()
    with pytest.raises(NotFound):
        delivery_resend(organization=other_organization, delivery_id=attempt.pk)
    assert WebhookDelivery.objects.count() == 1
    assert len(receiver.requests) == 1


def test_test_event_reaches_a_disabled_endpoint_once(
    organization, receiver, secret, celery_eager, django_capture_on_commit_callbacks
):
    receiver.respond = lambda request: 500
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url=receiver.url("/org"), is_enabled=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        attempt = endpoint_send_test_event(organization=organization, endpoint_id=endpoint.pk)
    [request] = receiver.requests
    payload = verify(secret, request)
    assert payload["type"] == "webhook.test"
    assert payload["data"] == {
        "message": "This is a test event from mjgate.",
        "endpoint": endpoint.pk,
    }
    attempt.refresh_from_db()
    assert (attempt.trigger, attempt.state, attempt.status_code) == ("manual", "dead", 500)
    assert WebhookDelivery.objects.filter(state="pending").count() == 0


def test_short_retries_are_also_queued_with_a_countdown(
    make_task, receiver, clock, monkeypatch, django_capture_on_commit_callbacks
):
    queued: list[tuple[Any, Any]] = []
    monkeypatch.setattr(
        "apps.webhooks.workers.deliver.apply_async",
        lambda args, countdown=None: queued.append((list(args), countdown)),
    )
    receiver.respond = lambda request: 503
    task = make_task(notify_hook=receiver.url())
    [event] = change(task, status="SUBMITTED")
    with django_capture_on_commit_callbacks(execute=True):
        events_deliver(event_ids=[event.pk])
    assert queued == [([[event.pk]], 5.0)]
    retry = event.deliveries.get(state="pending")
    # Queued explicitly, so the beat task leaves it alone until its dispatch lease ends.
    assert retry.dispatched_until == T0 + timedelta(seconds=5) + DISPATCH_LEASE
    # Longer retries are left to the beat task.
    clock.advance(5)
    with django_capture_on_commit_callbacks(execute=True):
        events_deliver(event_ids=[event.pk])
    assert len(queued) == 1
    assert event.deliveries.get(state="pending").dispatched_until is None


def test_manual_attempts_never_follow_the_retry_schedule(organization, receiver):
    endpoint = WebhookEndpoint.objects.create(organization=organization, url=receiver.url("/org"))
    receiver.respond = lambda request: 503
    attempt = endpoint_send_test_event(organization=organization, endpoint_id=endpoint.pk)
    events_deliver(event_ids=[attempt.event_id])
    attempt.refresh_from_db()
    assert attempt.trigger == DeliveryTrigger.MANUAL
    assert attempt.state == DeliveryState.DEAD
    assert WebhookDelivery.objects.count() == 1
