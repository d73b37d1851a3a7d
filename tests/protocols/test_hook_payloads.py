"""A task's own hook carries the Task JSON of the dialect that created it (SPEC §7)."""

from __future__ import annotations

import json

import pytest

from apps.protocols.mjproxy.payloads import queued_task_json as mjproxy_task_json
from apps.protocols.ttapi.payloads import job_json
from apps.protocols.v1.payloads import queued_task_json as native_task_json
from apps.tasks.enums import Action
from apps.tasks.events import native_task_payload, task_payload
from apps.tasks.models import Protocol, Task

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("protocol", "builder"),
    [
        (Protocol.MJPROXY, mjproxy_task_json),
        (Protocol.TTAPI, job_json),
        (Protocol.NATIVE, native_task_json),
    ],
)
def test_each_dialect_is_registered(organization, protocol, builder):
    task = Task.objects.create(
        organization=organization, action=Action.IMAGINE, protocol=protocol, state="s"
    )
    assert task_payload(task) == builder(task)
    # Organization endpoints always get the native JSON.
    assert native_task_payload(task) == native_task_json(task)


def test_hook_bodies_of_submitted_tasks(funded, live_key, client_for, sandbox):
    from apps.webhooks.models import WebhookEvent

    client = client_for(live_key)
    mj = client.post(
        "/mj/submit/imagine",
        {"prompt": "a", "notifyHook": "https://hooks.example/mj", "state": "abc"},
        format="json",
    ).json()["result"]
    tt = client.post(
        "/midjourney/v1/imagine",
        {"prompt": "b", "hookUrl": "https://hooks.example/tt"},
        format="json",
    ).json()["data"]["jobId"]
    mj_bodies = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=mj, endpoint=None)]
    tt_bodies = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=tt, endpoint=None)]
    assert mj_bodies and tt_bodies
    assert all(b["id"] == mj and b["state"] == "abc" and "promptEn" in b for b in mj_bodies)
    assert all(
        b["jobId"] == tt and set(b) == {"status", "message", "jobId", "data"} for b in tt_bodies
    )
