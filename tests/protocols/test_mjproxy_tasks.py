"""midjourney-proxy task endpoints and the Task JSON (SPEC §6.1)."""

from __future__ import annotations

import io
import re
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.models import Task
from tests.tasks.helpers import run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

TASK_KEYS = {
    "id",
    "action",
    "status",
    "prompt",
    "promptEn",
    "description",
    "state",
    "submitTime",
    "startTime",
    "finishTime",
    "progress",
    "imageUrl",
    "imageUrls",
    "videoUrl",
    "videoUrls",
    "thumbnailUrl",
    "failReason",
    "errorCode",
    "mode",
    "properties",
    "buttons",
}


def _download(url: str) -> Image.Image:
    """GET a result URL with a fresh client: no key, no session."""
    response = Client().get(urlsplit(url).path)
    assert response.status_code == 200, url
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    image.load()
    return image


def test_fetch_of_a_finished_grid(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    state = '{"chat": 42, "note": "ünïcode"}'
    submitted = client.post(
        "/mj/submit/imagine", {"prompt": "a red fox --ar 3:2", "state": state}, format="json"
    ).json()
    run_to_completion(submitted["result"])
    response = client.get(f"/mj/task/{submitted['result']}/fetch")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TASK_KEYS
    task = Task.objects.get(pk=submitted["result"])
    assert body["id"] == task.pk
    assert (body["action"], body["status"], body["mode"]) == ("IMAGINE", "SUCCESS", "FAST")
    assert body["prompt"] == "a red fox --ar 3:2"
    assert body["promptEn"] == task.prompt_en
    assert body["state"] == state
    assert body["progress"] == "100%"
    assert body["failReason"] is None and body["errorCode"] is None
    for key in ("submitTime", "startTime", "finishTime"):
        assert isinstance(body[key], int)
        assert abs(body[key] - timezone.now().timestamp() * 1000) < 60_000
    assert body["submitTime"] <= body["startTime"] <= body["finishTime"]
    assert body["submitTime"] == int(task.submitted_at.timestamp() * 1000)
    assert body["properties"]["finalPrompt"] == task.prompt_en
    assert body["properties"]["isTest"] is False
    labels = [b["label"] for b in body["buttons"]]
    assert labels == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
    for button in body["buttons"]:
        assert set(button) == {"customId", "emoji", "label", "type", "style"}
        assert button["type"] == 2 and button["style"] in (2, 3)
    # Stored with the domain key, answered with the proxy's in its place: same bytes as before.
    assert all(set(b) == {"custom_id", "emoji", "label", "type", "style"} for b in task.buttons)
    assert [list(b.items()) for b in body["buttons"]] == [
        [("customId" if k == "custom_id" else k, v) for k, v in b.items()] for b in task.buttons
    ]
    job_hash = task.properties["jobHash"]
    ids = [b["customId"] for b in body["buttons"]]
    assert ids[:4] == [f"MJ::JOB::upsample::{n}::{job_hash}" for n in range(1, 5)]
    assert ids[4] == f"MJ::JOB::reroll::0::{job_hash}::SOLO"
    assert ids[5:] == [f"MJ::JOB::variation::{n}::{job_hash}" for n in range(1, 5)]
    grid = _download(body["imageUrl"])
    assert len(body["imageUrls"]) == 4
    parts = [_download(item["url"]) for item in body["imageUrls"]]
    assert grid.width > grid.height
    assert all(p.size == (grid.width // 2, grid.height // 2) for p in parts)


def test_stored_buttons_go_out_byte_for_byte_with_the_proxys_key(funded, live_key, client_for):
    """Only ``custom_id`` is renamed, in its place; the rest of each entry is as stored."""
    stored = [
        {"custom_id": "MJ::JOB::upsample::1::h", "emoji": "", "label": "U1", "type": 2, "style": 2},
        {"label": "Odd", "custom_id": "MJ::BOOKMARK::h", "extra": [1, "ü"]},
    ]
    task = Task.objects.create(
        organization=funded, action=Action.IMAGINE, status=Status.SUCCESS, buttons=stored
    )
    response = client_for(live_key).get(f"/mj/task/{task.pk}/fetch")
    assert response.status_code == 200
    sent = response.json()["buttons"]
    assert sent == [
        {"customId": "MJ::JOB::upsample::1::h", "emoji": "", "label": "U1", "type": 2, "style": 2},
        {"label": "Odd", "customId": "MJ::BOOKMARK::h", "extra": [1, "ü"]},
    ]
    task.refresh_from_db()  # the keys in the order the database gives them back
    assert [list(b) for b in sent] == [
        ["customId" if k == "custom_id" else k for k in b] for b in task.buttons
    ]
    Task.objects.filter(pk=task.pk).update(buttons=[])
    assert client_for(live_key).get(f"/mj/task/{task.pk}/fetch").json()["buttons"] == []


def test_fetch_of_an_upscale_lists_its_single_image(funded, live_key, client_for, finished_imagine):
    grid = finished_imagine()
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    client = client_for(live_key)
    answer = client.post("/mj/submit/action", {"taskId": grid.pk, "customId": u1}, format="json")
    run_to_completion(answer.json()["result"])
    body = client.get(f"/mj/task/{answer.json()['result']}/fetch").json()
    assert body["action"] == "UPSCALE"
    assert body["imageUrls"] == [{"url": body["imageUrl"]}]
    labels = [b["label"] for b in body["buttons"]]
    assert "Vary (Region)" in labels and "Zoom Out 2x" in labels
    _download(body["imageUrl"])


def test_progress_and_failure_rendering(funded, live_key, client_for):
    client = client_for(live_key)
    queued = client.post("/mj/submit/imagine", {"prompt": "slow"}, format="json").json()["result"]
    body = client.get(f"/mj/task/{queued}/fetch").json()
    assert (body["status"], body["progress"], body["startTime"], body["imageUrl"]) == (
        "NOT_START",
        "0%",
        None,
        None,
    )
    assert body["imageUrls"] is None and body["finishTime"] is None
    assert body["buttons"] == []
    Task.objects.filter(pk=queued).update(
        status=Status.IN_PROGRESS, progress=42, started_at=timezone.now()
    )
    assert client.get(f"/mj/task/{queued}/fetch").json()["progress"] == "42%"
    Task.objects.filter(pk=queued).update(
        status=Status.FAILURE,
        fail_reason="The upstream refused the prompt.",
        error_code=ErrorCode.UPSTREAM_REJECTED,
    )
    failed = client.get(f"/mj/task/{queued}/fetch").json()
    assert failed["progress"] == ""
    assert failed["failReason"] == "The upstream refused the prompt."
    assert failed["errorCode"] == "UPSTREAM_REJECTED"


def test_fetch_of_unknown_or_foreign_id_is_404_with_empty_body(
    live_key, outsider_key, client_for, other_organization
):
    foreign = Task.objects.create(organization=other_organization, action=Action.IMAGINE)
    client = client_for(live_key)
    for task_id in (foreign.pk, "1700000000000123456", "not-a-number"):
        response = client.get(f"/mj/task/{task_id}/fetch")
        assert response.status_code == 404
        assert response.content == b""
    assert client_for(outsider_key).get(f"/mj/task/{foreign.pk}/fetch").status_code == 200


def test_list_by_condition_keeps_order_and_omits_foreign(
    funded, live_key, client_for, other_organization
):
    client = client_for(live_key)
    mine = [
        client.post("/mj/submit/imagine", {"prompt": f"p{n}"}, format="json").json()["result"]
        for n in range(2)
    ]
    foreign = Task.objects.create(organization=other_organization, action=Action.IMAGINE)
    response = client.post(
        "/mj/task/list-by-condition",
        {"ids": [mine[1], foreign.pk, "404", mine[0], mine[1]]},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert [t["id"] for t in body] == [mine[1], mine[0]]
    assert all(set(t) == TASK_KEYS for t in body)
    assert client.post("/mj/task/list-by-condition", {}, format="json").json() == []
    bad = client.post("/mj/task/list-by-condition", {"ids": "x"}, format="json").json()
    assert bad["code"] == 4


def test_list_and_queue(funded, live_key, client_for, other_organization, finished_imagine):
    done = finished_imagine()
    client = client_for(live_key)
    queued = client.post("/mj/submit/imagine", {"prompt": "later"}, format="json").json()
    Task.objects.create(
        organization=other_organization, action=Action.IMAGINE, status=Status.NOT_START
    )
    listed = client.get("/mj/task/list").json()
    assert [t["id"] for t in listed] == [queued["result"], done.pk]
    queue = client.get("/mj/task/queue").json()
    assert [t["id"] for t in queue] == [queued["result"]]


def test_image_seed(funded, live_key, client_for, finished_imagine, other_organization):
    grid = finished_imagine()
    client = client_for(live_key)
    assert client.get(f"/mj/task/{grid.pk}/image-seed").json() == {
        "code": 1,
        "description": "Success",
        "result": str(grid.seed),
        "properties": {},
    }
    foreign = Task.objects.create(organization=other_organization, action=Action.IMAGINE, seed=7)
    answers = [client.get(f"/mj/task/{i}/image-seed") for i in (foreign.pk, "12345")]
    assert [a.status_code for a in answers] == [404, 404]
    assert (
        answers[0].json()
        == answers[1].json()
        == {
            "code": 3,
            "description": "Task not found.",
            "result": None,
            "properties": {},
        }
    )


def test_cancel_releases_the_hold(funded, live_key, client_for, other_organization):
    client = client_for(live_key)
    queued = client.post("/mj/submit/imagine", {"prompt": "never mind"}, format="json").json()
    assert balance_get(organization=funded).held == 14000
    answer = client.post(f"/mj/task/{queued['result']}/cancel")
    assert answer.status_code == 200
    assert answer.json() == {
        "code": 1,
        "description": "Cancelled",
        "result": queued["result"],
        "properties": {},
    }
    task = Task.objects.get(pk=queued["result"])
    assert task.status == Status.CANCEL
    assert balance_get(organization=funded).held == 0
    again = client.post(f"/mj/task/{queued['result']}/cancel").json()
    assert again["code"] == 4
    assert again["description"] == "The task already finished with status CANCEL."


def test_cancel_of_foreign_task_is_404_and_changes_nothing(
    live_key, client_for, other_organization, fund, outsider_key
):
    fund(other_organization, 100_000)
    theirs = (
        client_for(outsider_key)
        .post("/mj/submit/imagine", {"prompt": "theirs"}, format="json")
        .json()["result"]
    )
    before = snapshot(other_organization)
    answers = [client_for(live_key).post(f"/mj/task/{i}/cancel") for i in (theirs, "555")]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json() == answers[1].json()
    assert Task.objects.get(pk=theirs).status == Status.NOT_START
    assert snapshot(other_organization) == before


def test_test_key_tasks_are_marked_and_free(organization, test_mode_key, client_for, sandbox):
    client = client_for(test_mode_key)
    answer = client.post("/mj/submit/imagine", {"prompt": "free fox"}, format="json").json()
    assert answer["code"] == 1
    task = run_to_completion(answer["result"])
    assert task.status == Status.SUCCESS
    body = client.get(f"/mj/task/{task.pk}/fetch").json()
    assert body["properties"]["isTest"] is True
    assert re.fullmatch(r"http://testserver/files/results/[^/]+/\d+\.png", body["imageUrl"])
    balance = balance_get(organization=organization)
    assert (balance.available, balance.held) == (0, 0)
