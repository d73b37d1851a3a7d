"""Oversized request bodies are refused from their Content-Length, before a byte is read.

The requests below declare 200 MB but carry a few bytes: Django's test input refuses to read
past what it holds, so any attempt to read the body would fail the request with a 500.
"""

from __future__ import annotations

import json
import math

import pytest
from django.test import Client

from apps.core.models import IdempotencyRecord
from apps.core.ratelimit import MAX_REQUEST_BODY_BYTES

from .conftest import snapshot

pytestmark = pytest.mark.django_db

HUGE = str(200 * 1024 * 1024)
BODY = json.dumps({"prompt": "a red fox", "action": "IMAGINE"})


def _post(path: str, key: str, **headers: str):
    return Client().post(
        path,
        BODY,
        content_type="application/json",
        HTTP_MJ_API_SECRET=key,
        CONTENT_LENGTH=HUGE,
        **headers,
    )


def test_the_limit_fits_five_ten_mib_images_as_base64():
    five_images = 5 * (4 * math.ceil(10 * 1024 * 1024 / 3) + len("data:image/png;base64,"))
    assert five_images < MAX_REQUEST_BODY_BYTES < 100 * 1024 * 1024


def test_native_answers_413_in_its_error_shape(funded, live_key, sandbox):
    before = snapshot(funded)
    response = _post("/api/v1/tasks", live_key.plaintext, HTTP_IDEMPOTENCY_KEY="big-1")
    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "request_too_large",
            "message": (
                f"The request body is {HUGE} bytes; at most {MAX_REQUEST_BODY_BYTES} bytes "
                "(69 MiB) are accepted. Send at most five images of 10 MiB each."
            ),
            "details": {"max_bytes": MAX_REQUEST_BODY_BYTES, "content_length": int(HUGE)},
        }
    }
    assert snapshot(funded) == before
    assert IdempotencyRecord.objects.count() == 0


def test_mjproxy_answers_413_in_its_envelope(funded, live_key, sandbox):
    before = snapshot(funded)
    for path in ("/mj/submit/imagine", "/mj-relax/mj/submit/blend", "/mj/task/list-by-condition"):
        response = _post(path, live_key.plaintext)
        assert response.status_code == 413, path
        body = response.json()
        assert (body["code"], body["result"], body["properties"]) == (4, None, {})
        assert body["description"].startswith(f"The request body is {HUGE} bytes; at most ")
    assert snapshot(funded) == before


def test_ttapi_answers_413_in_its_envelope(funded, live_key, sandbox):
    before = snapshot(funded)
    response = _post("/midjourney/v1/imagine", live_key.plaintext)
    assert response.status_code == 413
    body = response.json()
    assert (body["status"], body["data"]) == ("FAILED", None)
    assert body["message"].startswith(f"The request body is {HUGE} bytes; at most ")
    assert snapshot(funded) == before


def test_without_a_key_the_answer_is_401_and_the_body_unread(funded, sandbox):
    before = snapshot(funded)
    response = Client().post(
        "/mj/submit/imagine", BODY, content_type="application/json", CONTENT_LENGTH=HUGE
    )
    assert response.status_code == 401
    assert snapshot(funded) == before


def test_a_body_within_the_limit_is_accepted(funded, live_key, client_for, sandbox):
    response = client_for(live_key).post("/mj/submit/imagine", {"prompt": "fits"}, format="json")
    assert response.json()["code"] == 1


DEEP = "[" * 200_000 + "]" * 200_000  # 400 kB: nested deeper than Python's JSON parser goes


def test_deeply_nested_json_is_a_bad_request_in_every_dialect(funded, live_key, sandbox):
    before = snapshot(funded)
    client = Client()
    key = {"HTTP_MJ_API_SECRET": live_key.plaintext}
    native = client.post(
        "/api/v1/tasks", DEEP, content_type="application/json", HTTP_IDEMPOTENCY_KEY="d", **key
    )
    assert native.status_code == 400
    assert native.json() == {
        "error": {
            "code": "parse_error",
            "message": "JSON parse error - the body is nested too deeply.",
            "details": None,
        }
    }
    mjproxy = client.post("/mj/submit/imagine", DEEP, content_type="application/json", **key)
    assert (mjproxy.status_code, mjproxy.json()) == (
        200,
        {"code": 4, "description": "The request body is not valid JSON.", "result": None,
         "properties": {}},
    )  # fmt: skip
    ttapi = client.post("/midjourney/v1/imagine", DEEP, content_type="application/json", **key)
    assert (ttapi.status_code, ttapi.json()) == (
        400,
        {"status": "FAILED", "message": "The request body is not valid JSON.", "data": None},
    )
    assert snapshot(funded) == before
    assert IdempotencyRecord.objects.filter(response_status__gte=500).count() == 0


def test_an_unknown_api_path_answers_json_in_its_dialect(live_key, client_for):
    client = client_for(live_key)
    native = client.get("/api/v1/taks")
    assert (native.status_code, native.json()) == (
        404,
        {
            "error": {
                "code": "not_found",
                "message": "No API endpoint at /api/v1/taks; see the API documentation at "
                "/api/docs/.",
                "details": None,
            }
        },
    )
    ttapi = client.post("/midjourney/v1/imagin", {"prompt": "x"}, format="json")
    assert ttapi.status_code == 404
    assert (ttapi.json()["status"], ttapi.json()["data"]) == ("FAILED", None)
    for path in ("/mj/submit/imagin", "/mj-relax/mj/task/list-by-ids"):
        mjproxy = client.post(path, {"prompt": "x"}, format="json")
        assert mjproxy.status_code == 404, path
        assert mjproxy.json() == {
            "code": 4,
            "description": f"No API endpoint at {path}; see the API documentation at /api/docs/.",
            "result": None,
            "properties": {},
        }
    # An unknown task still answers 404 with an empty body, as proxy clients expect.
    fetch = client.get("/mj/task/1700000000000000000/fetch")
    assert (fetch.status_code, fetch.content) == (404, b"")
    page = Client().get("/no-such-page/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
