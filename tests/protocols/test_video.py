"""VIDEO end to end through the sandbox in every dialect: real H.264 clips, prices, hooks."""

from __future__ import annotations

import base64
import io
import json

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.tasks.models import Task
from apps.webhooks.models import WebhookEvent
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

VIDEO_FAST = 112_000  # the seeded FAST row: a batch of 4 clips


def fetch_file(client, url: str, **headers) -> tuple[int, str, bytes]:
    path = url.split("://", 1)[-1].split("/", 1)[1]
    response = client.get(f"/{path}", **headers)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, response["Content-Type"], body


def probe(data: bytes) -> tuple[str, float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, (container.duration or 0) / 1_000_000


def assert_playable(client, url: str, seconds: float = 5.0) -> None:
    status, content_type, body = fetch_file(client, url)
    assert (status, content_type) == (200, "video/mp4")
    codec, duration = probe(body)
    assert codec == "h264"
    assert abs(duration - seconds) <= 0.5


def patterned_data_url() -> str:
    """A start frame with structure (a flat colour shows no motion)."""
    image = Image.new("RGB", (96, 96), (20, 40, 90))
    draw = ImageDraw.Draw(image)
    for n in range(0, 96, 12):
        draw.rectangle((n, 0, n + 5, 95), fill=(240, 200 - n, n * 2))
    draw.ellipse((30, 30, 66, 66), fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def charged(task: Task) -> int:
    capture = LedgerEntry.objects.get(task=task, kind=EntryKind.CAPTURE)
    return -capture.delta_held


def test_mjproxy_submit_video_end_to_end(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    before = balance_get(organization=funded).available
    answer = client.post(
        "/mj/submit/video",
        {
            "prompt": "the sea breathes",
            "motion": "high",
            "base64": png_data_url(size=(80, 60)),
            "batchSize": 2,
            "videoType": "vid_1.1_i2v_480",
            "notifyHook": "https://hooks.example/mj",
            "state": "s1",
        },
        format="json",
    ).json()
    assert answer["code"] == 1, answer
    task = run_to_completion(answer["result"])
    assert task.status == "SUCCESS", task.fail_reason
    body = client.get(f"/mj/task/{task.id}/fetch").json()
    assert body["action"] == "VIDEO"
    assert [set(v) for v in body["videoUrls"]] == [{"url"}, {"url"}]
    # new-api's Midjourney DTO reads the first clip as ``videoUrl``.
    assert body["videoUrl"] == body["videoUrls"][0]["url"]
    assert body["imageUrl"].endswith(".png")  # the poster
    for video in body["videoUrls"]:
        assert_playable(client, video["url"])
    assert [b["label"] for b in body["buttons"]][:2] == [
        "Extend (High motion)",
        "Extend (Low motion)",
    ]
    # Charged per the price table: half the batch-of-4 row for a batch of 2.
    assert charged(task) == VIDEO_FAST // 2
    assert balance_get(organization=funded).available == before - VIDEO_FAST // 2
    # The task's hook carries videoUrls in the proxy's shape.
    hooks = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=task.id)]
    final = [h for h in hooks if h.get("status") == "SUCCESS"]
    assert final and final[-1]["videoUrls"] == body["videoUrls"]

    # Extend clip 2 through the same route (trueai's action=extend, taskId, index from 0).
    extend = client.post(
        "/mj/submit/video",
        {"action": "extend", "taskId": task.id, "index": 1, "batchSize": 1},
        format="json",
    ).json()
    assert extend["code"] == 1, extend
    extended = run_to_completion(extend["result"])
    assert extended.status == "SUCCESS", extended.fail_reason
    assert extended.params["index"] == 2
    url = client.get(f"/mj/task/{extended.id}/fetch").json()["videoUrls"][0]["url"]
    assert_playable(client, url, seconds=9.0)
    assert charged(extended) == VIDEO_FAST // 4


def test_mjproxy_animate_button_on_an_upscale(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    imagine = client.post("/mj/submit/imagine", {"prompt": "a fox"}, format="json").json()
    grid = run_to_completion(imagine["result"])
    upsample = grid.buttons[0]["custom_id"]
    up = client.post(
        "/mj/submit/action", {"taskId": grid.id, "customId": upsample}, format="json"
    ).json()
    upscale = run_to_completion(up["result"])
    animate = next(b["custom_id"] for b in upscale.buttons if "animate_high" in b["custom_id"])
    assert animate.startswith("MJ::JOB::animate_high::1::") and animate.endswith("::SOLO")
    pressed = client.post(
        "/mj/submit/action", {"taskId": upscale.id, "customId": animate}, format="json"
    ).json()
    video = run_to_completion(pressed["result"])
    assert video.status == "SUCCESS", video.fail_reason
    body = client.get(f"/mj/task/{video.id}/fetch").json()
    assert len(body["videoUrls"]) == 4
    assert_playable(client, body["videoUrls"][3]["url"])
    assert charged(video) == VIDEO_FAST


def test_ttapi_video_submit_and_extend(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    answer = client.post(
        "/midjourney/video/submit",
        {
            "prompt": "leaves drift",
            "imageUrl": png_data_url(size=(64, 96)),
            "manual": "low",
            "bs": 1,
            "hookUrl": "https://hooks.example/tt",
        },
        format="json",
    ).json()
    assert answer["status"] == "SUCCESS", answer
    task = run_to_completion(answer["data"]["jobId"])
    assert task.status == "SUCCESS", task.fail_reason
    data = client.get(f"/midjourney/v1/fetch?jobId={task.id}").json()["data"]
    assert data["action"] == "video"
    assert len(data["videoUrls"]) == 1
    assert data["cdnImage"].endswith(".png")
    assert data["components"] == ["extend_high1", "extend_low1"]
    assert_playable(client, data["videoUrls"][0])
    assert charged(task) == VIDEO_FAST // 4
    assert data["quota"] == str(VIDEO_FAST // 4)
    hooks = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=task.id)]
    assert any(h["data"]["videoUrls"] == data["videoUrls"] for h in hooks)
    # TTAPI numbers the videos of a job from 0; the v1 path answers too.
    extend = client.post(
        "/midjourney/v1/video/extend",
        {"jobId": task.id, "index": 0, "animateMode": "manual", "prompt": "faster", "bs": 1},
        format="json",
    ).json()
    assert extend["status"] == "SUCCESS", extend
    extended = run_to_completion(extend["data"]["jobId"])
    assert extended.status == "SUCCESS", extended.fail_reason
    assert extended.params["index"] == 1 and extended.params["manual"] is True
    # A job of one video has only video 0; the refusal says so in TTAPI's numbering.
    refused = client.post("/midjourney/video/extend", {"jobId": task.id, "index": 2}, format="json")
    assert refused.status_code == 400
    assert "index goes from 0 to 0" in refused.json()["message"]


def test_native_video_and_animate_alias(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    created = client.post(
        "/api/v1/tasks",
        {
            "action": "ANIMATE",
            "images": [patterned_data_url()],
            "motion": "high",
            "batch_size": 4,
            "loop": True,
            "webhook_url": "https://hooks.example/v1",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["action"] == "VIDEO"
    assert created.json()["price"] == VIDEO_FAST
    task = run_to_completion(created.json()["id"])
    assert task.status == "SUCCESS", task.fail_reason
    body = client.get(f"/api/v1/tasks/{task.id}").json()
    assert len(body["video_urls"]) == 4
    assert body["poster_url"] == body["image_url"]
    for url in body["video_urls"]:
        assert_playable(client, url)
    # A loop comes back to its first frame.
    _, _, clip = fetch_file(client, body["video_urls"][0])
    with av.open(io.BytesIO(clip)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]

    def distance(a, b) -> float:
        return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean)

    assert distance(frames[0], frames[-1]) < distance(frames[0], frames[len(frames) // 2])
    hooks = [json.loads(e.body) for e in WebhookEvent.objects.filter(task_id=task.id)]
    assert any(h.get("video_urls") == body["video_urls"] for h in hooks)
    assert charged(task) == VIDEO_FAST


def test_native_video_prices_are_listed(live_key, client_for):
    prices = client_for(live_key).get("/api/v1/prices").json()
    text = json.dumps(prices)
    assert "VIDEO" in text and "112000" in text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/mj/submit/video", {"motion": "wild", "base64": "IMAGE"}, "motion"),
        ("/mj/submit/video", {"batchSize": 3, "base64": "IMAGE"}, "batchSize"),
        ("/mj/submit/video", {"prompt": "no frame"}, "image"),
        ("/mj/submit/video", {"videoType": "vid_1.1_i2v_1080", "base64": "IMAGE"}, "videoType"),
        ("/midjourney/video/submit", {"imageUrl": "IMAGE", "bs": 3}, "bs"),
        ("/midjourney/video/submit", {"imageUrl": "IMAGE", "manual": "wild"}, "manual"),
        ("/midjourney/video/extend", {"jobId": "1", "index": 7}, "index"),
        ("/api/v1/tasks", {"action": "VIDEO", "images": ["IMAGE"], "batch_size": 3}, "batch_size"),
        ("/api/v1/tasks", {"action": "IMAGINE", "prompt": "a", "motion": "low"}, "motion"),
    ],
)
def test_bad_video_requests_name_the_field_and_change_nothing(
    funded, live_key, client_for, sandbox, path, body, field
):
    body = {k: (png_data_url() if v == "IMAGE" else v) for k, v in body.items()}
    body = {k: ([png_data_url()] if v == ["IMAGE"] else v) for k, v in body.items()}
    before = snapshot(funded)
    response = client_for(live_key).post(path, body, format="json")
    assert field in json.dumps(response.json()), response.json()
    if path.startswith("/mj/"):
        assert response.json()["code"] == 4
    else:
        assert response.status_code == 400
    assert snapshot(funded) == before
