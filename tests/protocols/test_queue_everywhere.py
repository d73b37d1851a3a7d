"""A queued task says where it stands in every dialect: submit, fetch, lists and webhooks.

No account serves the pool here, so every task waits and each stands one place further back
(issue 18, "Queue transparency"). The expected start comes from the pool's measured
throughput: 60 FAST tasks finished in the last ten minutes, 0.1 a second.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import MembershipTier
from apps.tasks.enums import Status
from apps.webhooks.models import WebhookEvent
from tests.factories import TaskFactory, WebhookEndpointFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def measured(funded: Any) -> Any:
    MembershipTier.objects.filter(pk=funded.tier_id).update(max_unfinished_tasks=100)
    now = timezone.now()
    for n in range(60):
        TaskFactory(
            organization=funded,
            status=Status.SUCCESS,
            mode="FAST",
            started_at=now - timedelta(seconds=n + 30),
            finished_at=now - timedelta(seconds=n),
        )
    return funded


def test_every_dialect_shows_the_place_and_expected_start(measured, live_key, client_for):
    client = client_for(live_key)
    WebhookEndpointFactory(organization=measured, url="https://hooks.example/org")
    mj = [
        client.post(
            "/mj/submit/imagine",
            {"prompt": f"fox {n}", "notifyHook": "https://hooks.example/mj"},
            format="json",
        ).json()
        for n in range(2)
    ]
    assert [a["properties"]["numberOfQueues"] for a in mj] == [0, 1]
    tt = client.post(
        "/midjourney/v1/imagine",
        {"prompt": "fox tt", "hookUrl": "https://hooks.example/tt"},
        format="json",
    ).json()["data"]["jobId"]
    native = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": "fox v1"}, format="json")
    assert native.status_code == 201
    assert native.json()["properties"]["queue_position"] == 4

    # mj-proxy: fetch, the lists.
    second = mj[1]["result"]
    fetched = client.get(f"/mj/task/{second}/fetch").json()
    assert fetched["properties"]["numberOfQueues"] == 1
    assert isinstance(fetched["properties"]["estimatedStartTime"], int)
    listed = {t["id"]: t for t in client.get("/mj/task/list").json()}
    assert listed[second]["properties"]["numberOfQueues"] == 1
    queue = {t["id"]: t for t in client.get("/mj/task/queue").json()}
    assert queue[tt]["properties"]["numberOfQueues"] == 2
    by_ids = client.post("/mj/task/list-by-condition", {"ids": [tt]}, format="json").json()
    assert by_ids[0]["properties"]["numberOfQueues"] == 2

    # TTAPI fetch: its job JSON's data.
    job = client.get("/midjourney/v1/fetch", {"jobId": tt}).json()
    assert job["status"] == "PENDING_QUEUE"
    assert job["data"]["queuePosition"] == 3
    expected_ms = job["data"]["estimatedStartTime"]
    wait_ms = expected_ms - int(timezone.now().timestamp() * 1000)
    assert 25_000 <= wait_ms <= 30_000 + 60_000  # three slots to wait for at 0.1 a second

    # Native: fetch and the list.
    native_id = native.json()["id"]
    detail = client.get(f"/api/v1/tasks/{native_id}").json()
    assert detail["properties"]["queue_position"] == 4
    assert detail["properties"]["expected_start"] is not None
    page = client.get("/api/v1/tasks", {"status": "NOT_START"}).json()
    positions = {t["id"]: t["properties"]["queue_position"] for t in page["results"]}
    assert positions == {mj[0]["result"]: 1, second: 2, tt: 3, native_id: 4}

    # Webhooks sent while queued carry the place as the submit answer said it.
    own = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=second, endpoint=None)]
    assert own and own[0]["properties"]["numberOfQueues"] == 1
    tt_hook = json.loads(WebhookEvent.objects.get(task_id=tt, endpoint=None).body)
    assert tt_hook["data"]["queuePosition"] == 3
    org_hook = json.loads(
        WebhookEvent.objects.filter(task_id=native_id, endpoint__isnull=False).first().body
    )
    assert org_hook["data"]["properties"]["queue_position"] == 4


def test_a_running_or_finished_task_shows_no_place(measured, live_key, client_for):
    client = client_for(live_key)
    done = TaskFactory(organization=measured, status=Status.SUCCESS, mode="FAST")
    assert "numberOfQueues" not in client.get(f"/mj/task/{done.pk}/fetch").json()["properties"]
    assert "queue_position" not in client.get(f"/api/v1/tasks/{done.pk}").json()["properties"]
    assert (
        "queuePosition" not in client.get("/midjourney/v1/fetch", {"jobId": done.pk}).json()["data"]
    )


def test_a_list_of_queued_tasks_reads_their_places_for_the_page_at_once(
    measured, live_key, client_for
):
    """The lists read the places of a page's queued tasks together: the statements of a page
    of twelve queued tasks are those of a page of two (no per-row reads)."""
    client = client_for(live_key)
    for n in range(12):
        answer = client.post("/mj/submit/imagine", {"prompt": f"owl {n}"}, format="json")
        assert answer.json()["code"] == 22
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements(path: str, **params: Any) -> tuple[Any, int]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, params)
        assert response.status_code == 200, response.content
        return response.json(), len(captured)

    _, two = statements("/api/v1/tasks", limit=2)
    page, twelve = statements("/api/v1/tasks", limit=12)
    assert twelve == two
    places = sorted(t["properties"]["queue_position"] for t in page["results"])
    assert places == list(range(1, 13))
    listed, mj_twelve = statements("/mj/task/list")
    assert sorted(
        t["properties"]["numberOfQueues"] for t in listed if t["status"] == "NOT_START"
    ) == list(range(12))
    assert mj_twelve <= two + 1
