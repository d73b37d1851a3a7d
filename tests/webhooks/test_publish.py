"""Publishing task changes to the outbox (apps.tasks.events.task_changed → the webhooks leaf)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction

from apps.protocols.v1.payloads import queued_task_json as native_task_json
from apps.tasks import events
from apps.tasks.events import register_task_payload, task_changed
from apps.tasks.models import Task
from apps.webhooks.models import (
    DeliveryState,
    DeliveryTrigger,
    EventState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from apps.webhooks.services import balance_low_publish

from .conftest import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_registered_dialects(monkeypatch):
    # The protocol apps register their Task JSON builders at start-up; a test that registers its
    # own works on an empty registry that is put back afterwards.
    monkeypatch.setattr(events, "_BUILDERS", {})


def endpoint(organization: Any, url: str = "https://hooks.example.com/a", **fields: Any) -> Any:
    # Created with the ORM: the URL guard of endpoint_create is tested with the API.
    return WebhookEndpoint.objects.create(organization=organization, url=url, **fields)


def test_writes_one_message_per_target_with_its_first_attempt(
    organization, make_task, clock, django_capture_on_commit_callbacks, monkeypatch
):
    queued: list[Any] = []
    monkeypatch.setattr(
        "apps.webhooks.workers.deliver.apply_async", lambda args, **options: queued.append(args[0])
    )
    hook = "https://client.example.com/mj-hook"
    task = make_task(notify_hook=hook, state="my-state")
    everything = endpoint(organization)
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        events = task_changed(task=task, event_type="task.updated")
    assert len(callbacks) == 1
    hook_event, endpoint_event = events
    assert queued == [[hook_event.pk, endpoint_event.pk]]

    assert hook_event.endpoint is None
    assert hook_event.url == hook
    assert hook_event.sequence == 1
    assert hook_event.msg_id.startswith("msg_") and len(hook_event.msg_id) == 30
    assert hook_event.event_type == "task.updated"
    assert hook_event.state == EventState.PENDING
    assert hook_event.created_at == T0
    assert json.loads(hook_event.body) == native_task_json(task)

    envelope = json.loads(endpoint_event.body)
    assert envelope == {
        "type": "task.updated",
        "timestamp": T0.isoformat(),
        "data": native_task_json(task),
    }
    assert endpoint_event.endpoint == everything
    assert endpoint_event.target_key == f"endpoint:{everything.pk}"

    for event in events:
        [attempt] = event.deliveries.all()
        assert attempt.attempt == 1
        assert attempt.state == DeliveryState.PENDING
        assert attempt.trigger == DeliveryTrigger.AUTO
        assert attempt.next_attempt_at == T0
        assert attempt.organization == organization
        assert attempt.endpoint == event.endpoint


def test_nothing_is_written_or_queued_when_the_transaction_rolls_back(
    make_task, organization, django_capture_on_commit_callbacks
):
    task = make_task(notify_hook="https://client.example.com/hook")
    endpoint(organization)
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        task_changed(task=task, event_type="task.updated")
        raise RuntimeError("the task change failed")
    assert callbacks == []
    assert WebhookEvent.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0


def test_a_task_without_hook_and_an_organization_without_endpoints_write_nothing(
    make_task, other_organization
):
    endpoint(other_organization)  # someone else's endpoint never hears of our tasks
    task = make_task()
    assert task_changed(task=task, event_type="task.succeeded") == []
    assert WebhookEvent.objects.count() == 0


def test_body_is_a_snapshot_of_the_committed_state_and_sequences_increase(make_task):
    task = make_task(notify_hook="https://client.example.com/hook")
    stale = Task.objects.get(pk=task.pk)
    bodies = []
    for status, progress in (("SUBMITTED", 0), ("IN_PROGRESS", 40), ("SUCCESS", 100)):
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(status=status, progress=progress)
            # A stale instance is fine: the publisher re-reads the row under its lock.
            [event] = task_changed(task=stale, event_type="task.updated")
        bodies.append(event)
    assert [e.sequence for e in bodies] == [1, 2, 3]
    assert [(json.loads(e.body)["status"], json.loads(e.body)["progress"]) for e in bodies] == [
        ("SUBMITTED", 0),
        ("IN_PROGRESS", 40),
        ("SUCCESS", 100),
    ]
    assert len({e.msg_id for e in bodies}) == 3


def test_event_type_defaults_from_the_status(make_task):
    expectations = {
        "IN_PROGRESS": "task.updated",
        "SUCCESS": "task.succeeded",
        "FAILURE": "task.failed",
        "CANCEL": "task.cancelled",
    }
    for status, expected in expectations.items():
        task = make_task(notify_hook="https://client.example.com/hook", status=status)
        [event] = task_changed(task=task)
        assert event.event_type == expected


def test_endpoint_subscriptions(organization, make_task):
    all_events = endpoint(organization, "https://a.example.com/", event_types=[])
    updates = endpoint(organization, "https://b.example.com/", event_types=["task.updated"])
    successes = endpoint(organization, "https://c.example.com/", event_types=["task.succeeded"])
    both = endpoint(
        organization, "https://d.example.com/", event_types=["task.updated", "task.succeeded"]
    )
    balance = endpoint(organization, "https://e.example.com/", event_types=["balance.low"])
    endpoint(organization, "https://f.example.com/", is_enabled=False)
    task = make_task()

    progress = task_changed(task=task, event_type="task.updated")
    assert {(e.endpoint, e.event_type) for e in progress} == {
        (all_events, "task.updated"),
        (updates, "task.updated"),
        (both, "task.updated"),
    }
    success = task_changed(task=task, event_type="task.succeeded")
    assert {(e.endpoint, e.event_type) for e in success} == {
        (all_events, "task.succeeded"),
        (updates, "task.updated"),  # "every change", under the type it subscribed to
        (successes, "task.succeeded"),
        (both, "task.succeeded"),  # once, not twice
    }
    assert {e.endpoint: e.sequence for e in success} == {
        all_events: 2,
        updates: 2,
        successes: 1,
        both: 2,
    }
    low = balance_low_publish(organization=organization, available=10, held=5, threshold=100)
    assert {e.endpoint for e in low} == {all_events, balance}
    assert json.loads(low[0].body)["data"] == {
        "organization": organization.pk,
        "available": 10,
        "held": 5,
        "threshold": 100,
    }
    assert all(e.task_id is None and e.sequence == 0 for e in low)


def test_hook_body_uses_the_builder_of_the_task_protocol(
    organization, make_task, no_registered_dialects
):
    register_task_payload(
        "mjproxy", lambda task: {"id": task.id, "status": task.status, "dialect": "mj"}
    )
    register_task_payload("v1", native_task_json)
    endpoint(organization)
    task = make_task(protocol="mjproxy", notify_hook="https://client.example.com/hook")
    hook_event, endpoint_event = task_changed(task=task, event_type="task.updated")
    assert json.loads(hook_event.body) == {"id": task.id, "status": "NOT_START", "dialect": "mj"}
    # Organization endpoints always get the native Task JSON.
    assert json.loads(endpoint_event.body)["data"] == native_task_json(task)

    register_task_payload("v1", lambda task: {"native": task.id})
    hook_event, endpoint_event = task_changed(task=task, event_type="task.updated")
    assert json.loads(endpoint_event.body)["data"] == {"native": task.id}
    ttapi_task = make_task(protocol="ttapi", notify_hook="https://client.example.com/hook")
    [ttapi_hook, _] = task_changed(task=ttapi_task, event_type="task.updated")
    assert json.loads(ttapi_hook.body) == {"native": ttapi_task.id}  # falls back to native


def test_no_builder_at_all_fails_loudly(make_task, no_registered_dialects):
    task = make_task(notify_hook="https://client.example.com/hook")
    with pytest.raises(LookupError):
        task_changed(task=task, event_type="task.updated")
    assert not WebhookEvent.objects.exists()


def test_hook_body_has_public_fields_only(make_task):
    task = make_task(notify_hook="https://client.example.com/hook", engine_state={"cookie": "x"})
    [hook_event] = task_changed(task=task, event_type="task.updated")
    payload = json.loads(hook_event.body)
    assert payload == native_task_json(task)
    assert "engine_state" not in payload
    assert "upstream_account" not in payload
    assert payload["id"] == task.id
    assert payload["status"] == "NOT_START"
    assert payload["object"] == "task"


def test_task_created_is_its_own_type_and_part_of_every_change(organization, make_task):
    created_only = endpoint(organization, "https://a.example.com/", event_types=["task.created"])
    updates = endpoint(organization, "https://b.example.com/", event_types=["task.updated"])
    endpoint(organization, "https://c.example.com/", event_types=["task.failed"])
    task = make_task()
    events = task_changed(task=task, event_type="task.created")
    assert {(e.endpoint, e.event_type) for e in events} == {
        (created_only, "task.created"),
        (updates, "task.updated"),
    }
    [update] = task_changed(task=task, event_type="task.updated")
    assert (update.endpoint, update.event_type) == (updates, "task.updated")
