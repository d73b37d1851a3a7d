"""Probe: what docs/api.md says organization endpoints and a task's own hook receive."""

from __future__ import annotations

import json

import pytest

from apps.webhooks.models import WebhookEvent
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db

RECEIVER = "http://127.0.0.1:9/hook"


def test_endpoint_bodies_are_typed_envelopes_of_the_native_task_json(
    funded,
    live_key,
    client_for,
    sandbox,
    settings,
):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # the receiver is on loopback
    client = client_for(live_key)
    created = client.post("/api/v1/webhooks/endpoints", {"url": RECEIVER}, format="json")
    assert created.status_code == 201, created.content[:300]
    answer = client.post(
        "/mj/submit/imagine",
        {"prompt": "a red fox", "notifyHook": f"{RECEIVER}/own"},
        format="json",
    )
    task_id = answer.json()["result"]
    run_to_completion(task_id)

    to_endpoint = WebhookEvent.objects.filter(task_id=task_id, endpoint__isnull=False)
    bodies = [json.loads(event.body) for event in to_endpoint.order_by("sequence")]
    types = [body["type"] for body in bodies]
    assert types[0] == "task.created" and types[-1] == "task.succeeded", types
    assert set(types) <= {"task.created", "task.updated", "task.succeeded"}, types
    for body in bodies:
        assert set(body) == {"type", "timestamp", "data"}, body
        assert (body["data"]["object"], body["data"]["id"]) == ("task", task_id)

    own = WebhookEvent.objects.filter(task_id=task_id, endpoint__isnull=True).order_by("sequence")
    last = json.loads(own.last().body)
    # A task's own hook gets the Task JSON of the dialect that created it, not an envelope.
    assert {"id", "status", "imageUrl", "buttons", "properties"} <= set(last), last
    assert (last["id"], last["status"]) == (task_id, "SUCCESS")
