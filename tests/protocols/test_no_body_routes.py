"""Writes that read no body (cancel, secret rotation) refuse a malformed or misdirected one.

Bad input gets a clear error in the dialect's format and changes nothing: these routes had no
body to parse, so no parser ever looked at what they were sent, and a cancel with a broken or
foreign body still cancelled (``OrganizationAPIView.takes_no_body``)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.billing.models import LedgerEntry
from apps.tasks.enums import Status
from apps.tasks.models import Task
from apps.webhooks.models import WebhookSecret

from .conftest import snapshot

pytestmark = pytest.mark.django_db

# Bodies docs/api.md ("Request size and shape", "No silently ignored input") says are 400s.
MALFORMED = {
    "not_an_object": b"[1]",
    "invalid_json": b'{"a":',
    "invalid_utf8": b'{"a":"\xff"}',
    "nul": b'{"a":"x\\u0000"}',
    "lone_surrogate": b'{"a":"\\ud800"}',
    "unknown_field": b'{"unknown": 1}',
}


@pytest.fixture
def client(live_key) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return c


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_webhook_secret_rotate_refuses_a_malformed_body(client, organization, body):
    client.post("/api/v1/webhooks/secret/rotate", data=b"", content_type="application/json")
    before = list(WebhookSecret.objects.values_list("pk", "secret_encrypted", "expires_at"))
    response = client.post(
        "/api/v1/webhooks/secret/rotate", data=body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"validation_error", "parse_error"}
    assert list(WebhookSecret.objects.values_list("pk", "secret_encrypted", "expires_at")) == before


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_native_cancel_refuses_a_malformed_body(client, funded, body):
    task = client.post(
        "/api/v1/tasks", {"action": "IMAGINE", "prompt": "a red fox"}, format="json"
    ).json()
    before = snapshot(funded), LedgerEntry.objects.count()
    response = client.post(
        f"/api/v1/tasks/{task['id']}/cancel", data=body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert Task.objects.get(pk=task["id"]).status != Status.CANCEL
    assert (snapshot(funded), LedgerEntry.objects.count()) == before


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_mjproxy_cancel_refuses_a_malformed_body(client, funded, body):
    task_id = client.post("/mj/submit/imagine", {"prompt": "a red fox"}, format="json").json()[
        "result"
    ]
    before = snapshot(funded), LedgerEntry.objects.count()
    response = client.post(f"/mj/task/{task_id}/cancel", data=body, content_type="application/json")
    assert response.json()["code"] == 4, response.content
    assert Task.objects.get(pk=task_id).status != Status.CANCEL
    assert (snapshot(funded), LedgerEntry.objects.count()) == before
