"""``POST /api/v1/uploads`` (issue 17): images stored, stable URLs answered, usable in prompts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.tasks.enums import Status
from apps.tasks.storage import read_file
from tests.tasks.helpers import png_bytes, png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(live_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    return client


def test_uploaded_images_get_stable_urls_that_serve_them_and_work_as_references(
    api, funded, sandbox
):
    image = png_bytes((10, 20, 200))
    answer = api.post(
        "/api/v1/uploads", {"images": [png_data_url((10, 20, 200)), png_data_url()]}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    urls = answer.json()["urls"]
    assert len(urls) == 2 and all(u.startswith("http://testserver/files/inputs/") for u in urls)
    name = urls[0].split("/files/", 1)[1]
    assert read_file(name) == image
    served = api.get(f"/files/{name}")
    assert served.status_code == 200 and b"".join(served.streaming_content) == image

    prompt = f"{urls[0]} {urls[1]} a lighthouse --sref {urls[0]} --v 7"
    created = api.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt}, format="json")
    assert created.status_code == 201, created.json()
    assert run_to_completion(created.json()["id"]).status == Status.SUCCESS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"images": []}, "images"),
        ({"images": ["not an image"]}, "images"),
        ({"images": [png_data_url()] * 11}, "images"),
        ({"images": [png_data_url()], "purpose": "sref"}, "purpose"),
        ({}, "images"),
    ],
)
def test_a_bad_upload_is_refused_and_stores_nothing(api, funded, body, field, tmp_path):
    before = snapshot(funded)
    answer = api.post("/api/v1/uploads", body, format="json")
    assert answer.status_code == 400, answer.json()
    assert field in str(answer.json()["error"])
    assert snapshot(funded) == before


def test_a_read_only_key_cannot_upload(organization, make_key):
    issued = make_key(organization, read_only=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    answer = client.post("/api/v1/uploads", {"images": [png_data_url()]}, format="json")
    assert answer.status_code == 403
