"""Each dialect names a refused field in its own words (issue 12).

The task services name fields in domain words (``images``, ``mask``, ``hook_url``, ``button``);
mj-proxy clients read ``base64Array``/``maskBase64``/``notifyHook``/``customId``, TTAPI clients
``imgBase64Array``/``mask``/``hookUrl``, native clients ``images``/``mask``/``webhook_url``/
``button``. The native API never shows a compatible dialect's words.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.api_keys.services import IssuedKey
from apps.tasks.enums import Status
from apps.tasks.models import Protocol, Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from tests.tasks.helpers import button_id, data_url, png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

NOT_AN_IMAGE = data_url(b"this is not an image")
MJPROXY_WORDS = ("base64Array", "maskBase64", "notifyHook", "customId", "taskId", "sourceBase64")
TTAPI_WORDS = ("imgBase64Array", "hookUrl", "jobId")


@pytest.fixture
def client(live_key: IssuedKey, client_for: Callable[[IssuedKey], APIClient]) -> APIClient:
    return client_for(live_key)


@pytest.fixture
def waiting(funded, live_key, finished_imagine) -> Task:
    """A Vary (Region) press on an upscale, waiting for its mask."""
    caller = Caller(organization=funded, api_key=live_key.api_key, protocol=Protocol.NATIVE)
    grid = finished_imagine()
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U1")).task.pk
    )
    task = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Vary (Region)")
    ).task
    assert task.status == Status.MODAL
    return task


def _native_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.json()
    text = json.dumps(response.json())
    for word in (*MJPROXY_WORDS, *TTAPI_WORDS):
        assert word not in text, (word, text)
    return dict(response.json()["error"])


# --- images ----------------------------------------------------------------------------------


def test_a_blend_with_one_image_names_each_dialects_field(funded, client, sandbox):
    one = [png_data_url()]
    before = snapshot(funded)

    native = _native_error(
        client.post("/api/v1/tasks", {"action": "BLEND", "images": one}, format="json")
    )
    mjproxy = client.post("/mj/submit/blend", {"base64Array": one}, format="json").json()
    ttapi = client.post("/midjourney/v1/blend", {"imgBase64Array": one}, format="json")

    assert native["message"] == "images must contain between 2 and 5 images; got 1."
    assert native["details"] == {"field": "images", "count": 1}
    assert mjproxy["description"] == "base64Array must contain between 2 and 5 images; got 1."
    assert ttapi.status_code == 400
    assert ttapi.json()["message"] == "imgBase64Array must contain between 2 and 5 images; got 1."
    assert snapshot(funded) == before


def test_a_broken_reference_image_is_named_by_its_position(funded, client, sandbox):
    images = [png_data_url(), data_url(b"GIF89a broken")]

    native = _native_error(
        client.post(
            "/api/v1/tasks",
            {"action": "IMAGINE", "prompt": "a fox", "images": images},
            format="json",
        )
    )
    mjproxy = client.post(
        "/mj/submit/imagine", {"prompt": "a fox", "base64Array": images}, format="json"
    ).json()

    assert native["message"].startswith("images[1] ")
    assert native["details"]["field"] == "images[1]"
    assert mjproxy["code"] == 4
    assert mjproxy["description"].startswith("base64Array[1] ")


def test_describe_and_face_swap_images_keep_mjproxy_s_own_field_names(funded, client, sandbox):
    describe = client.post("/mj/submit/describe", {"base64": NOT_AN_IMAGE}, format="json").json()
    swap = client.post(
        "/mj/insight-face/swap",
        {"sourceBase64": png_data_url(), "targetBase64": NOT_AN_IMAGE},
        format="json",
    ).json()
    native = _native_error(
        client.post(
            "/api/v1/tasks", {"action": "DESCRIBE", "images": [NOT_AN_IMAGE]}, format="json"
        )
    )

    assert describe["description"].startswith("base64 is not an image")
    assert swap["description"].startswith("targetBase64 is not an image")
    assert native["message"].startswith("images[0] is not an image")


# --- the hook --------------------------------------------------------------------------------


def test_a_bad_hook_is_named_webhook_url_natively(funded, client, sandbox):
    native = _native_error(
        client.post(
            "/api/v1/tasks",
            {"action": "IMAGINE", "prompt": "a fox", "webhook_url": "ftp://hooks.example/x"},
            format="json",
        )
    )
    assert native["details"] == {"field": "webhook_url"}


# --- buttons and masks -----------------------------------------------------------------------


def test_a_button_the_parent_lacks_is_a_button_natively_and_a_custom_id_in_mjproxy(
    funded, client, finished_imagine
):
    grid = finished_imagine()
    foreign = "MJ::JOB::upsample::1::someone-elses"

    native = _native_error(
        client.post("/api/v1/tasks", {"parent": grid.pk, "button": foreign}, format="json")
    )
    mjproxy = client.post(
        "/mj/submit/action", {"taskId": grid.pk, "customId": foreign}, format="json"
    ).json()

    assert native["details"]["field"] == "button"
    assert mjproxy["code"] == 4
    assert foreign in mjproxy["description"]


def test_a_mask_that_is_not_an_image_is_named_in_each_dialect(funded, client, waiting):
    native = _native_error(
        client.post(f"/api/v1/tasks/{waiting.pk}/modal", {"mask": NOT_AN_IMAGE}, format="json")
    )
    mjproxy = client.post(
        "/mj/submit/modal", {"taskId": waiting.pk, "maskBase64": NOT_AN_IMAGE}, format="json"
    ).json()
    ttapi = client.post(
        "/midjourney/v1/inpaint",
        {"jobId": waiting.parent_id, "mask": NOT_AN_IMAGE},
        format="json",
    )

    assert native["message"].startswith("mask is not an image")
    assert native["details"]["field"] == "mask"
    assert mjproxy["description"].startswith("maskBase64 is not an image")
    assert ttapi.status_code == 400
    assert ttapi.json()["message"].startswith("mask is not an image")


def test_a_missing_mask_is_named_in_each_dialect(funded, client, waiting):
    native = _native_error(client.post(f"/api/v1/tasks/{waiting.pk}/modal", {}, format="json"))
    mjproxy = client.post("/mj/submit/modal", {"taskId": waiting.pk}, format="json").json()

    assert native["message"] == "Vary (Region) needs mask: the area to change, white on black."
    assert mjproxy["description"] == (
        "Vary (Region) needs maskBase64: the area to change, white on black."
    )


def test_a_task_not_waiting_is_named_task_id_natively_and_task_id_in_mjproxy(
    funded, client, finished_imagine
):
    grid = finished_imagine()
    native = _native_error(
        client.post(f"/api/v1/tasks/{grid.pk}/modal", {"prompt": "x"}, format="json")
    )
    assert native["details"] == {"field": "task_id"}
