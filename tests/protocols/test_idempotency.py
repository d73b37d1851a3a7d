"""Idempotency-Key on POST (SPEC §6.3)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.core.idempotency import IN_FLIGHT_LOCK, request_fingerprint
from apps.core.models import IdempotencyRecord
from apps.tasks.models import Task

from .conftest import snapshot

pytestmark = pytest.mark.django_db

TASKS = "/api/v1/tasks"


def test_same_key_same_body_replays(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    body = {"action": "IMAGINE", "prompt": "a fox", "metadata": {"a": 1, "b": 2}}
    first = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    # Same JSON in another key order and spacing is the same request.
    second = Client().post(
        TASKS,
        '{"metadata": {"b": 2, "a": 1},   "prompt": "a fox", "action": "IMAGINE"}',
        content_type="application/json",
        HTTP_MJ_API_SECRET=live_key.plaintext,
        HTTP_IDEMPOTENCY_KEY="k-1",
    )
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    assert Task.objects.filter(organization=funded).count() == 1


def test_same_key_other_body_is_422(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    client.post(
        TASKS, {"action": "IMAGINE", "prompt": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    before = snapshot(funded)
    other = client.post(
        TASKS, {"action": "IMAGINE", "prompt": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_mismatch"
    other_path = client.post(f"{TASKS}/1/cancel", format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert other_path.status_code == 422
    assert snapshot(funded) == before


def test_in_flight_is_409_until_the_lock_goes_stale(funded, live_key, client_for, sandbox):
    body = {"action": "IMAGINE", "prompt": "a"}
    fingerprint = request_fingerprint(
        method="POST", path=TASKS, body=b'{"action":"IMAGINE","prompt":"a"}'
    )
    now = timezone.now()
    record = IdempotencyRecord.objects.create(
        api_key=live_key.api_key,
        key="busy",
        fingerprint=fingerprint,
        state=IdempotencyRecord.IN_FLIGHT,
        locked_at=now,
        expires_at=now + timedelta(hours=24),
    )
    client = client_for(live_key)
    busy = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_in_flight"
    assert Task.objects.count() == 0
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        locked_at=now - IN_FLIGHT_LOCK - timedelta(seconds=1)
    )
    taken_over = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="busy")
    assert taken_over.status_code == 201
    assert Task.objects.count() == 1


def test_keys_are_scoped_per_api_key_and_expire(funded, live_key, make_key, client_for, sandbox):
    other_key = make_key(funded, name="second")
    body = {"action": "IMAGINE", "prompt": "a"}
    client_for(live_key).post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    second = client_for(other_key).post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert Task.objects.count() == 2
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    third = client_for(live_key).post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert third.status_code == 201 and "Idempotent-Replayed" not in third
    assert Task.objects.count() == 3


def test_retryable_refusals_are_not_stored(organization, live_key, client_for, fund, sandbox):
    client = client_for(live_key)
    body = {"action": "IMAGINE", "prompt": "a"}
    broke = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="pay")
    assert broke.status_code == 402
    fund(organization, 100_000)
    paid = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="pay")
    assert paid.status_code == 201
    assert "Idempotent-Replayed" not in paid


def test_validation_errors_are_replayed(live_key, client_for):
    client = client_for(live_key)
    first = client.post(TASKS, {"prompt": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="bad")
    second = client.post(TASKS, {"prompt": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="bad")
    assert first.status_code == second.status_code == 400
    assert second["Idempotent-Replayed"] == "true"


def test_unexpected_errors_release_the_key(funded, live_key, client_for, monkeypatch, sandbox):
    def boom(**kwargs):
        raise RuntimeError("boom")

    client = client_for(live_key)
    client.raise_request_exception = False
    monkeypatch.setattr("apps.protocols.v1.views.task_submit", boom)
    crashed = client.post(
        TASKS, {"action": "IMAGINE", "prompt": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="c"
    )
    assert crashed.status_code == 500
    assert IdempotencyRecord.objects.count() == 0
    monkeypatch.undo()
    ok = client.post(
        TASKS, {"action": "IMAGINE", "prompt": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="c"
    )
    assert ok.status_code == 201


def test_bad_idempotency_key_is_400(live_key, client_for):
    response = client_for(live_key).post(
        TASKS, {"action": "IMAGINE", "prompt": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 256
    )
    assert response.status_code == 400
    assert Task.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_task(organization, live_key, fund, sandbox):
    fund(organization, 1_000_000)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        try:
            barrier.wait()
            response = Client().post(
                TASKS,
                {"action": "IMAGINE", "prompt": "race"},
                content_type="application/json",
                HTTP_MJ_API_SECRET=live_key.plaintext,
                HTTP_IDEMPOTENCY_KEY="race",
            )
            results.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Task.objects.filter(organization=organization).count() == 1
    assert sorted(set(results)) <= [201, 409]
    assert results.count(201) >= 1


def test_large_bodies_work_with_a_key(settings, funded, live_key, client_for, sandbox):
    import base64
    import io
    import os

    from PIL import Image

    noise = Image.frombytes("RGB", (1000, 1000), os.urandom(3_000_000))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert len(image) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    client = client_for(live_key)
    body = {"action": "DESCRIBE", "images": [image]}
    first = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="big")
    second = client.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="big")
    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert Task.objects.filter(organization=funded, action="DESCRIBE").count() == 1


def test_stored_responses_are_encrypted_and_older_clear_ones_still_replay(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    first = client.post(TASKS, {"action": "IMAGINE", "prompt": "sealed"}, format="json",
                        HTTP_IDEMPOTENCY_KEY="sealed")  # fmt: skip
    stored = bytes(IdempotencyRecord.objects.get(key="sealed").response_body)
    assert first.json()["id"].encode() not in stored
    assert stored.startswith(b"gAAAAA")  # a Fernet token
    # A row stored in clear before encryption (kept at most a day) replays as it was.
    now = timezone.now()
    IdempotencyRecord.objects.create(
        api_key=live_key.api_key,
        key="legacy",
        fingerprint=request_fingerprint(method="POST", path=TASKS, body=b'{"prompt":"old"}'),
        state=IdempotencyRecord.COMPLETED,
        locked_at=now,
        response_status=201,
        response_body=b'{"id":"1700000000000000042"}',
        response_content_type="application/json",
        expires_at=now + timedelta(hours=1),
    )
    replay = client.post(TASKS, {"prompt": "old"}, format="json", HTTP_IDEMPOTENCY_KEY="legacy")
    assert (replay.status_code, replay.json()) == (201, {"id": "1700000000000000042"})
    assert Task.objects.filter(organization=funded).count() == 1
