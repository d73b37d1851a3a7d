"""Probes: the HTTP statuses docs/api.md gives per dialect for an Idempotency-Key reused with
another request (mj-proxy answers its refusals as HTTP 200 with code 4) and for an unreachable
database."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import Client

from apps.protocols.mjproxy import views as mjproxy_views
from apps.protocols.ttapi import views as ttapi_views
from apps.tasks.models import Task

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "status", "refused"),
    [
        ("/api/v1/tasks", 422, lambda body: body["error"]["code"] == "idempotency_key_mismatch"),
        ("/midjourney/v1/imagine", 422, lambda body: body["status"] == "FAILED"),
        ("/mj/submit/imagine", 200, lambda body: body["code"] == 4),
    ],
    ids=["native", "ttapi", "mjproxy"],
)
def test_a_reused_key_with_another_body(
    funded, live_key, client_for, sandbox, path, status, refused
):
    client = client_for(live_key)
    first = {"prompt": "a red fox"}
    other = {"prompt": "a grey owl"}
    if path.startswith("/api/"):
        first, other = {"action": "IMAGINE", **first}, {"action": "IMAGINE", **other}
    assert client.post(path, first, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code in (
        200,
        201,
    )
    answer = client.post(path, other, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert answer.status_code == status, answer.content[:300]
    assert refused(answer.json()), answer.json()
    assert Task.objects.filter(organization=funded).count() == 1


@pytest.mark.parametrize(
    ("views", "path", "failed"),
    [
        (mjproxy_views, "/mj/task/123/fetch", {"code": 9}),
        (ttapi_views, "/midjourney/v1/fetch?jobId=123", {"status": "FAILED"}),
    ],
    ids=["mjproxy", "ttapi"],
)
def test_a_database_outage_is_a_503_in_the_compatible_dialects(
    live_key, monkeypatch, views, path, failed
):
    """docs/api.md: mj-proxy code 9 with HTTP 503 (and TTAPI 503) while a backing service is
    unreachable. (That it lacks Retry-After is tests/docs_probe/test_contract_gaps.py.)"""

    def down(**kwargs: object) -> object:
        raise OperationalError("connection to server failed")

    monkeypatch.setattr(views, "task_fetch", down)
    response = Client(raise_request_exception=False).get(
        path, HTTP_MJ_API_SECRET=live_key.plaintext
    )
    assert response.status_code == 503
    assert failed.items() <= response.json().items()
