"""The three dialects end to end over HTTP with a real Celery worker (Redis, PostgreSQL).

The test process serves the API (Django test client) and dispatches inline as the web process
does; the worker subprocess runs the sandbox jobs, stores the images and settles the holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.models import Task
from tests.integration_support import WAIT_TIMEOUT
from tests.tasks.helpers import png_data_url, sandbox_account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = WAIT_TIMEOUT


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"not done within {TIMEOUT} s: {value}")


def downloadable(url: str) -> bool:
    response = Client().get(urlsplit(url).path)
    return response.status_code == 200 and response["Content-Type"].startswith("image/")


@pytest.fixture
def api(organization, live_key, fund, celery_worker) -> APIClient:
    fund(organization, 1_000_000)
    sandbox_account(duration="0.5")
    client = APIClient()
    client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return client


def mj_fetch(client: APIClient, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: client.get(f"/mj/task/{task_id}/fetch").json(),
        lambda body: body["status"] in ("SUCCESS", "FAILURE", "CANCEL"),
    )


def test_mjproxy_imagine_action_and_vary_region(api):
    submitted = api.post(
        "/mj/submit/imagine", {"prompt": "a lighthouse", "state": "e2e"}, format="json"
    )
    assert submitted.json()["code"] == 1
    grid = mj_fetch(api, submitted.json()["result"])
    assert (grid["status"], grid["progress"], grid["state"]) == ("SUCCESS", "100%", "e2e")
    assert all(
        downloadable(url)
        for url in [grid["imageUrl"], *(item["url"] for item in grid["imageUrls"])]
    )

    u1 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U1")
    upscale = api.post("/mj/submit/action", {"taskId": grid["id"], "customId": u1}, format="json")
    assert upscale.json()["code"] in (1, 22)
    upscaled = mj_fetch(api, upscale.json()["result"])
    assert (upscaled["status"], upscaled["action"]) == ("SUCCESS", "UPSCALE")
    assert downloadable(upscaled["imageUrl"])

    region = next(b["customId"] for b in upscaled["buttons"] if b["label"] == "Vary (Region)")
    waiting = api.post(
        "/mj/submit/action", {"taskId": upscaled["id"], "customId": region}, format="json"
    ).json()
    assert waiting["code"] == 21
    modal = api.post(
        "/mj/submit/modal",
        {
            "taskId": waiting["result"],
            "prompt": "a red door",
            "maskBase64": png_data_url((255, 255, 255)),
        },
        format="json",
    ).json()
    assert modal["code"] in (1, 22)
    varied = mj_fetch(api, waiting["result"])
    assert (varied["status"], varied["action"]) == ("SUCCESS", "VARIATION")
    assert downloadable(varied["imageUrl"])


def test_relax_prefix_charges_the_relax_price(api, organization):
    before = balance_get(organization=organization).available
    submitted = api.post("/mj-relax/mj/submit/imagine", {"prompt": "a calm sea"}, format="json")
    task = mj_fetch(api, submitted.json()["result"])
    assert (task["status"], task["mode"]) == ("SUCCESS", "RELAX")
    balance = balance_get(organization=organization)
    assert (before - balance.available, balance.held) == (7000, 0)
    entries = LedgerEntry.objects.filter(task_id=task["id"]).order_by("id")
    assert [(e.kind, e.amount) for e in entries] == [
        (EntryKind.HOLD, 7000),
        (EntryKind.CAPTURE, 7000),
    ]


def test_ttapi_imagine_fetch_and_upsample(api):
    job_id = api.post(
        "/midjourney/v1/imagine", {"prompt": "a fox", "getUImages": True}, format="json"
    ).json()["data"]["jobId"]
    by_get = wait_for(
        lambda: api.get("/midjourney/v1/fetch", {"jobId": job_id}).json(),
        lambda body: body["status"] in ("SUCCESS", "FAILED"),
    )
    by_post = api.post("/midjourney/v1/fetch", {"jobId": job_id}, format="json").json()
    assert by_get == by_post
    assert by_get["status"] == "SUCCESS"
    assert by_get["data"]["quota"] == "14000"
    assert all(downloadable(url) for url in [by_get["data"]["cdnImage"], *by_get["data"]["images"]])
    action = api.post(
        "/midjourney/v1/action", {"jobId": job_id, "action": "upsample1"}, format="json"
    ).json()
    assert action["status"] == "SUCCESS"
    upscaled = wait_for(
        lambda: api.get("/midjourney/v1/fetch", {"jobId": action["data"]["jobId"]}).json(),
        lambda body: body["status"] in ("SUCCESS", "FAILED"),
    )
    assert (upscaled["status"], upscaled["data"]["action"]) == ("SUCCESS", "upsample1")


def test_native_create_with_idempotency_key_twice_makes_one_task(api, organization):
    body = {"action": "IMAGINE", "prompt": "one and only"}
    first = api.post("/api/v1/tasks", body, format="json", HTTP_IDEMPOTENCY_KEY="e2e-1")
    second = api.post("/api/v1/tasks", body, format="json", HTTP_IDEMPOTENCY_KEY="e2e-1")
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second["Idempotent-Replayed"] == "true"
    assert Task.objects.filter(organization=organization).count() == 1
    done = wait_for(
        lambda: api.get(f"/api/v1/tasks/{first.json()['id']}").json(),
        lambda task: task["status"] in ("SUCCESS", "FAILURE"),
    )
    assert done["status"] == "SUCCESS"
    assert balance_get(organization=organization).held == 0
