"""Probes: the request limits docs/api.md states are the ones each dialect enforces.

Prompt length, ``state`` length and the image URLs one prompt may carry hold alike in every
dialect; an upload's "1-10 images" is bounded by the body's "at most five values of 1 MiB or
more", as every request body is.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from apps.core.jsonbody import LARGE_STRING_BYTES, MAX_JSON_LARGE_STRINGS
from apps.tasks.services.inputs import MAX_PROMPT_LENGTH, MAX_STATE_LENGTH
from apps.tasks.services.references import MAX_PROMPT_URLS
from tests.protocols.conftest import snapshot

pytestmark = pytest.mark.django_db


def _post(path: str, body: dict, live_key) -> tuple[int, dict]:
    response = Client(raise_request_exception=False).post(
        path,
        json.dumps(body),
        content_type="application/json",
        HTTP_MJ_API_SECRET=live_key.plaintext,
    )
    return response.status_code, response.json()


def test_the_limits_are_the_documented_figures() -> None:
    assert (MAX_PROMPT_LENGTH, MAX_STATE_LENGTH, MAX_PROMPT_URLS) == (8192, 65_536, 10)


def test_a_prompt_over_8192_characters_is_refused_in_every_dialect(funded, live_key, sandbox):
    prompt = "x" * (MAX_PROMPT_LENGTH + 1)
    says = "The prompt is 8193 characters long; the maximum is 8192."
    before = snapshot(funded)

    status, body = _post("/mj/submit/imagine", {"prompt": prompt}, live_key)
    assert (status, body["code"]) == (200, 4) and says in body["description"], body
    status, body = _post("/midjourney/v1/imagine", {"prompt": prompt}, live_key)
    assert (status, body["status"]) == (400, "FAILED") and says in body["message"], body
    status, body = _post("/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt}, live_key)
    assert (status, body["error"]["code"]) == (400, "validation_error"), body
    assert says in body["error"]["message"], body
    # A prompt's own error names what in the prompt is at fault, not a field.
    assert body["error"]["details"] == {"length": 8193, "max_length": 8192}, body
    assert snapshot(funded) == before


def test_state_over_65536_characters_is_refused(funded, live_key, sandbox):
    before = snapshot(funded)
    status, body = _post(
        "/mj/submit/imagine",
        {"prompt": "a red fox", "state": "s" * (MAX_STATE_LENGTH + 1)},
        live_key,
    )
    assert (status, body["code"]) == (200, 4), body
    assert body["description"] == "state may be at most 65536 characters.", body
    assert snapshot(funded) == before


def test_a_prompt_with_more_than_ten_foreign_image_urls_is_refused(
    funded,
    live_key,
    sandbox,
    settings,
):
    settings.REHOST_PROMPT_URLS = True
    urls = " ".join(f"https://example.com/{n}.png" for n in range(MAX_PROMPT_URLS + 1))
    before = snapshot(funded)
    status, body = _post(
        "/api/v1/tasks", {"action": "IMAGINE", "prompt": f"{urls} a red fox"}, live_key
    )
    assert (status, body["error"]["code"]) == (400, "validation_error"), body
    assert "prompt may point at 10 images at most; it has 11." in json.dumps(body), body
    assert snapshot(funded) == before


def test_an_upload_of_six_images_of_1_mib_is_refused_as_any_body(funded, live_key):
    """docs/api.md: uploads take 1-10 images; the body shape limit (five values of 1 MiB or
    more) applies to them as to every request, so ten images fit only if five are smaller."""
    image = "A" * (LARGE_STRING_BYTES + 10)
    status, body = _post(
        "/api/v1/uploads", {"images": [image] * (MAX_JSON_LARGE_STRINGS + 1)}, live_key
    )
    assert (status, body["error"]["code"]) == (413, "request_too_large"), body
