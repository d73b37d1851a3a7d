"""HD (720p) video and end frames in every dialect: mj-proxy's ``videoType``/``endImage``,
TTAPI's ``resolution``/``endingUrl``, the native ``resolution``/``end_image``; real clips read
back with PyAV, charged on the HD row, refusals in each dialect's envelope changing nothing."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from apps.billing.models import EntryKind, LedgerEntry
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot
from .test_video import fetch_file

pytestmark = pytest.mark.django_db

HD_FAST = 358_400  # the seeded FAST row of an HD batch of 4
START, END = (220, 30, 30), (20, 40, 230)


def clip_facts(client, url: str) -> tuple[str, int, int, float, Image.Image]:
    status, content_type, body = fetch_file(client, url)
    assert (status, content_type) == (200, "video/mp4")
    with av.open(io.BytesIO(body)) as container:
        context = container.streams.video[0].codec_context
        frames = [frame.to_image() for frame in container.decode(video=0)]
        seconds = (container.duration or 0) / 1_000_000
        return context.name, context.width, context.height, seconds, frames[-1]


def off_by(image: Image.Image, color: tuple[int, int, int]) -> float:
    flat = Image.new("RGB", image.size, color)
    return sum(ImageStat.Stat(ImageChops.difference(image.convert("RGB"), flat)).mean) / 3


def charged(task_id: str) -> int:
    return -LedgerEntry.objects.get(task_id=task_id, kind=EntryKind.CAPTURE).delta_held


def check_clip(client, url: str) -> None:
    codec, width, height, seconds, last = clip_facts(client, url)
    assert (codec, width, height) == ("h264", 1280, 720)
    assert 4.5 <= seconds <= 5.5
    assert off_by(last, END) < 12  # it ends on the end frame


def test_mjproxy_hd_video_with_an_end_frame(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    answer = client.post(
        "/mj/submit/video",
        {
            "image": png_data_url(START, (160, 90)),
            "endImage": png_data_url(END, (160, 90)),
            "videoType": "vid_1.1_i2v_720",
            "batchSize": 1,
        },
        format="json",
    ).json()
    assert answer["code"] == 1, answer
    task = run_to_completion(answer["result"])
    assert task.status == "SUCCESS", task.fail_reason
    body = client.get(f"/mj/task/{task.id}/fetch").json()
    check_clip(client, body["videoUrls"][0]["url"])
    assert charged(task.id) == HD_FAST // 4


def test_ttapi_hd_video_with_an_ending_frame(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    answer = client.post(
        "/midjourney/video/submit",
        {
            "imageUrl": png_data_url(START, (160, 90)),
            "endingUrl": png_data_url(END, (160, 90)),
            "resolution": "hd",
            "bs": 1,
        },
        format="json",
    ).json()
    assert answer["status"] == "SUCCESS", answer
    task = run_to_completion(answer["data"]["jobId"])
    assert task.status == "SUCCESS", task.fail_reason
    data = client.get(f"/midjourney/v1/fetch?jobId={task.id}").json()["data"]
    check_clip(client, data["videoUrls"][0])
    assert data["quota"] == str(HD_FAST // 4)


def test_native_hd_video_with_an_end_frame(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    created = client.post(
        "/api/v1/tasks",
        {
            "action": "VIDEO",
            "images": [png_data_url(START, (160, 90))],
            "end_image": png_data_url(END, (160, 90)),
            "resolution": "720p",
            "batch_size": 1,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["price"] == HD_FAST // 4
    task = run_to_completion(created.json()["id"])
    assert task.status == "SUCCESS", task.fail_reason
    body = client.get(f"/api/v1/tasks/{task.id}").json()
    check_clip(client, body["video_urls"][0])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/mj/submit/video", {"image": "IMAGE", "videoType": "vid_1.1_i2v_720"}, "videoType"),
        ("/mj/submit/video", {"image": "IMAGE", "loop": True, "endImage": "IMAGE"}, "endImage"),
        ("/mj/submit/video", {"image": "IMAGE", "endImage": "data:x"}, "endImage"),
        ("/midjourney/video/submit", {"imageUrl": "IMAGE", "resolution": "hd"}, "resolution"),
        ("/midjourney/video/submit", {"imageUrl": "IMAGE", "resolution": "4k"}, "resolution"),
        ("/midjourney/video/submit", {"imageUrl": "IMAGE", "endingUrl": "nope"}, "endingUrl"),
        (
            "/api/v1/tasks",
            {"action": "VIDEO", "images": ["IMAGE"], "resolution": "720p"},
            "resolution",
        ),
        (
            "/api/v1/tasks",
            {"action": "VIDEO", "images": ["IMAGE"], "resolution": "1080p"},
            "resolution",
        ),
        ("/api/v1/tasks", {"action": "IMAGINE", "prompt": "a", "end_image": "IMAGE"}, "end_image"),
    ],
)
def test_bad_hd_or_end_frame_requests_name_the_field_and_change_nothing(
    funded, live_key, client_for, sandbox, path, body, field
):
    # RELAX: HD is refused there (Midjourney makes HD video in fast modes only).
    relax = {"/mj/submit/video": {"mode": "RELAX"}, "/midjourney/video/submit": {"mode": "relax"}}
    body = {**relax.get(path, {"mode": "RELAX"} if "resolution" in body else {}), **body}
    if path == "/api/v1/tasks" and body.get("action") == "IMAGINE":
        body.pop("mode", None)
    body = {k: (png_data_url() if v == "IMAGE" else v) for k, v in body.items()}
    body = {k: ([png_data_url()] if v == ["IMAGE"] else v) for k, v in body.items()}
    before = snapshot(funded)
    response = client_for(live_key).post(path, body, format="json")
    assert field in str(response.json()), response.json()
    assert snapshot(funded) == before
