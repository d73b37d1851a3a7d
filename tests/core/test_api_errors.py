"""Issue 19: NUL bytes and lone surrogates are validation errors in each dialect's shape, and
every 5xx on an API path is JSON in that dialect's shape (never Django's HTML page)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client, RequestFactory

from apps.core.models import IdempotencyRecord
from apps.protocols.common import bad_request, server_error
from apps.protocols.mjproxy import views as mjproxy_views
from apps.protocols.ttapi import views as ttapi_views
from apps.protocols.v1 import views as v1_views
from apps.tasks.models import Task
from tests.protocols.conftest import client_for, funded, sandbox, snapshot  # noqa: F401

pytestmark = pytest.mark.django_db

NUL_MESSAGE = (
    "Text may not contain NUL characters or unpaired UTF-16 surrogates (such as \\u0000 or "
    "\\ud800)."
)
URL_MESSAGE = "The URL may not contain NUL characters (%00) or unpaired surrogates."


def _key(live_key: Any) -> dict[str, str]:
    return {"HTTP_MJ_API_SECRET": live_key.plaintext}


def _raw_post(path: str, body: str, live_key: Any, **headers: str) -> Any:
    client = Client(raise_request_exception=False)
    return client.post(path, body, content_type="application/json", **_key(live_key), **headers)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"prompt":"x","state":"a\\u0000b"}', "state"),
        ('{"prompt":"x","mode":"\\ud800"}', "mode"),
        ('{"prompt":"a\\u0000"}', "prompt"),
        ('{"prompt":"x","notifyHook":"http://example.com/\\udfff"}', "notifyHook"),
    ],
)
def test_mjproxy_refuses_nul_and_lone_surrogates(funded, live_key, sandbox, body, field):  # noqa: F811
    before = snapshot(funded)
    response = _raw_post("/mj/submit/imagine", body, live_key)
    assert (response.status_code, response.json()) == (
        200,
        {"code": 4, "description": f"{field}: {NUL_MESSAGE}", "result": None, "properties": {}},
    )
    assert snapshot(funded) == before


def test_ttapi_refuses_nul_and_lone_surrogates(funded, live_key, sandbox):  # noqa: F811
    before = snapshot(funded)
    for body, field in (
        ('{"prompt":"a\\u0000b"}', "prompt"),
        ('{"prompt":"x","hookUrl":"\\ud800"}', "hookUrl"),
    ):
        response = _raw_post("/midjourney/v1/imagine", body, live_key)
        assert (response.status_code, response.json()) == (
            400,
            {"status": "FAILED", "message": f"{field}: {NUL_MESSAGE}", "data": None},
        )
    assert snapshot(funded) == before


def test_native_refuses_nul_in_metadata_with_and_without_idempotency(funded, live_key, sandbox):  # noqa: F811
    before = snapshot(funded)
    body = json.dumps({"action": "IMAGINE", "prompt": "x", "metadata": {"k": "a\u0000b"}})
    for headers in ({}, {"HTTP_IDEMPOTENCY_KEY": "nul-1"}):
        response = _raw_post("/api/v1/tasks", body, live_key, **headers)
        assert (response.status_code, response.json()) == (
            400,
            {
                "error": {
                    "code": "validation_error",
                    "message": "The request is invalid.",
                    "details": {"metadata": [NUL_MESSAGE]},
                }
            },
        )
    assert snapshot(funded) == before
    assert IdempotencyRecord.objects.filter(response_status__gte=500).count() == 0


def test_nul_in_the_url_is_a_validation_error_in_every_dialect(funded, live_key, sandbox):  # noqa: F811
    client = Client(raise_request_exception=False)
    key = _key(live_key)
    for path in ("/mj/task/%00/fetch", "/mj-relax/mj/task/a%00b/image-seed"):
        response = client.get(path, **key)
        assert (response.status_code, response.json()) == (
            200,
            {"code": 4, "description": URL_MESSAGE, "result": None, "properties": {}},
        ), path
    native = client.get("/api/v1/tasks/%00", **key)
    assert (native.status_code, native.json()) == (
        400,
        {"error": {"code": "validation_error", "message": URL_MESSAGE, "details": None}},
    )
    native_query = client.get("/api/v1/tasks?status=%00", **key)
    assert native_query.status_code == 400
    assert native_query.json()["error"]["code"] == "validation_error"
    ttapi = client.get("/midjourney/v1/fetch?jobId=%00", **key)
    assert (ttapi.status_code, ttapi.json()) == (
        400,
        {"status": "FAILED", "message": URL_MESSAGE, "data": None},
    )
    # Not an API path: Django's own handling (the dashboard has its own form validation).
    assert client.get("/%00").status_code in (400, 404)


@pytest.fixture
def broken_selectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task read fails unexpectedly, as a bug would."""

    def boom(**kwargs: Any) -> Any:
        raise RuntimeError("unexpected")

    for module in (mjproxy_views, ttapi_views, v1_views):
        for name in ("task_get", "task_fetch"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, boom)


def test_an_unexpected_error_is_json_in_every_dialect(funded, live_key, broken_selectors):  # noqa: F811
    client = Client(raise_request_exception=False)
    key = _key(live_key)
    native = client.get("/api/v1/tasks/123", **key)
    assert native.status_code == 500
    assert native["Content-Type"] == "application/json"
    assert native.json() == {
        "error": {
            "code": "internal_error",
            "message": "Internal error; the request was not completed.",
            "details": None,
        }
    }
    mjproxy = client.get("/mj/task/123/fetch", **key)
    assert (mjproxy.status_code, mjproxy.json()["code"]) == (500, 9)
    ttapi = client.get("/midjourney/v1/fetch?jobId=123", **key)
    assert (ttapi.status_code, ttapi.json()["status"]) == (500, "FAILED")


def test_handler500_and_handler400_answer_in_the_dialect_shape():
    factory = RequestFactory()
    shapes = {
        "/api/v1/balance": {"error"},
        "/midjourney/v1/imagine": {"status", "message", "data"},
        "/mj-fast/mj/submit/imagine": {"code", "description", "result", "properties"},
    }
    for path, keys in shapes.items():
        for response in (server_error(factory.get(path)), bad_request(factory.get(path))):
            assert response["Content-Type"] == "application/json"
            assert set(json.loads(response.content)) == keys
        assert server_error(factory.get(path)).status_code == 500
    page = server_error(factory.get("/billing/"))
    assert page.status_code == 500
    assert page["Content-Type"].startswith("text/html")


def test_a_database_outage_is_a_503_in_the_dialect_shape(funded, live_key, monkeypatch):  # noqa: F811
    def down(**kwargs: Any) -> Any:
        raise OperationalError("connection to server failed")

    monkeypatch.setattr(v1_views, "balance_get", down)
    response = Client(raise_request_exception=False).get("/api/v1/balance", **_key(live_key))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "unavailable"
    assert Task.objects.count() == 0
