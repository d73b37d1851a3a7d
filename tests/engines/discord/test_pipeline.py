"""The discord engine end to end: the three API dialects, a real Celery worker, the gateway
process (``manage.py discord_gateway``, pushing to the lifecycle) and the fake Discord.

The test process serves the API (Django test client, a real API key); the worker subprocess
sends the interactions, downloads the results into our storage and settles the holds; the
gateway subprocess holds the account's WebSocket and applies the bot's news to the tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url

from .pipeline_support import (
    TERMINAL,
    charged_once,
    downloadable,
    mj_fetch,
    mj_press,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def api(gateway_api_for: Callable[[str], APIClient]) -> APIClient:
    return gateway_api_for("gw-pipeline")


def test_every_action_through_the_mjproxy_dialect(api: APIClient, fake_discord: Any) -> None:
    before = fake_discord.stats()
    submitted = api.post("/mj/submit/imagine", {"prompt": "a lighthouse at dusk"}, format="json")
    assert submitted.json()["code"] == 1, submitted.json()
    grid = mj_fetch(api, submitted.json()["result"])
    assert grid["progress"] == "100%"
    assert all(
        downloadable(url)
        for url in [grid["imageUrl"], *(item["url"] for item in grid["imageUrls"])]
    )
    assert len(grid["imageUrls"]) == 4

    upscaled = mj_press(api, grid, "U1")
    assert upscaled["action"] == "UPSCALE" and downloadable(upscaled["imageUrl"])
    varied = mj_press(api, grid, "V1")
    assert varied["action"] == "VARIATION" and downloadable(varied["imageUrl"])
    zoomed = mj_press(api, upscaled, "Zoom Out 2x")
    assert zoomed["action"] == "ZOOM" and downloadable(zoomed["imageUrl"])
    # The follow-ups' own buttons work too: U2 of the variation grid.
    again = mj_press(api, varied, "U2")
    assert downloadable(again["imageUrl"])

    described = api.post(
        "/mj/submit/describe", {"base64": png_data_url((20, 40, 200))}, format="json"
    ).json()
    assert described["code"] == 1, described
    description = mj_fetch(api, described["result"])
    assert description["action"] == "DESCRIBE"
    assert "1️⃣" in description["properties"]["finalPrompt"], description["properties"]

    blended = api.post(
        "/mj/submit/blend",
        {"base64Array": [png_data_url((200, 0, 0)), png_data_url((0, 200, 0))]},
        format="json",
    ).json()
    assert blended["code"] == 1, blended
    blend = mj_fetch(api, blended["result"])
    assert blend["action"] == "BLEND" and downloadable(blend["imageUrl"])

    shortened = api.post(
        "/mj/submit/shorten",
        {"prompt": "a very long and winding prompt about a cat sitting on a windowsill"},
        format="json",
    ).json()
    assert shortened["code"] == 1, shortened
    short = mj_fetch(api, shortened["result"])
    assert short["action"] == "SHORTEN"

    stats = fake_discord.stats()
    assert stats["duplicate_nonces"] == before["duplicate_nonces"]
    # One interaction per task: 8 tasks, 8 interactions.
    assert stats["interactions"] - before["interactions"] == 8


def test_imagine_and_buttons_through_ttapi(api: APIClient) -> None:
    job_id = api.post(
        "/midjourney/v1/imagine", {"prompt": "a fox", "getUImages": True}, format="json"
    ).json()["data"]["jobId"]

    def ttapi_fetch(job: str) -> dict[str, Any]:
        body = wait_for(
            lambda: api.get("/midjourney/v1/fetch", {"jobId": job}).json(),
            lambda body: body["status"] in TERMINAL,
        )
        assert body["status"] == "SUCCESS", body
        charged_once(job)
        return body

    grid = ttapi_fetch(job_id)
    assert all(downloadable(url) for url in [grid["data"]["cdnImage"], *grid["data"]["images"]])
    for action in ("upsample1", "variation1"):
        pressed = api.post(
            "/midjourney/v1/action", {"jobId": job_id, "action": action}, format="json"
        ).json()
        assert pressed["status"] == "SUCCESS", pressed
        done = ttapi_fetch(pressed["data"]["jobId"])
        assert done["data"]["action"] == action
        assert downloadable(done["data"]["cdnImage"])
    described = api.post(
        "/midjourney/v1/describe", {"base64": png_data_url()}, format="json"
    ).json()
    assert described["status"] == "SUCCESS", described
    ttapi_fetch(described["data"]["jobId"])
    blended = api.post(
        "/midjourney/v1/blend",
        {"imgBase64Array": [png_data_url((1, 2, 3)), png_data_url((200, 100, 50))]},
        format="json",
    ).json()
    assert blended["status"] == "SUCCESS", blended
    ttapi_fetch(blended["data"]["jobId"])


def test_imagine_and_buttons_through_the_native_api(api: APIClient) -> None:
    def native_done(task_id: str) -> dict[str, Any]:
        body = wait_for(
            lambda: api.get(f"/api/v1/tasks/{task_id}").json(),
            lambda body: body["status"] in TERMINAL,
        )
        assert body["status"] == "SUCCESS", body
        charged_once(task_id)
        return body

    created = api.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": "a kite"}, format="json")
    assert created.status_code == 201, created.json()
    grid = native_done(created.json()["id"])
    for button in ("U1", "V1"):
        pressed = api.post("/api/v1/tasks", {"parent": grid["id"], "button": button}, format="json")
        assert pressed.status_code == 201, pressed.json()
        native_done(pressed.json()["id"])
    for body in (
        {"action": "DESCRIBE", "images": [png_data_url()]},
        {"action": "SHORTEN", "prompt": "a long prompt about a lighthouse in a storm at night"},
        {"action": "BLEND", "images": [png_data_url((9, 9, 9)), png_data_url((90, 90, 9))]},
    ):
        created = api.post("/api/v1/tasks", body, format="json")
        assert created.status_code == 201, created.json()
        native_done(created.json()["id"])
    assert Task.objects.filter(status="SUCCESS").count() == 6
