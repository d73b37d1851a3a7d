"""Video on the discord engine end to end: the mj-proxy dialect, a real Celery worker, the
gateway process (``manage.py discord_gateway``) and the fake Discord's bot.

An upscale's "Animate (Low motion)" button, then "Extend (High motion)" on the video, then a
start frame with a prompt through ``/mj/submit/video``: each task's clips are served from our
storage as H.264 MP4s of the right length, with a poster, charged once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import av
import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob
from tests.tasks.helpers import png_data_url

from .pipeline_support import (
    downloadable,
    mj_fetch,
    mj_press,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def api(gateway_api_for: Callable[[str], APIClient]) -> APIClient:
    return gateway_api_for("gw-video")


def _clips(task: dict[str, Any]) -> list[tuple[str, float]]:
    """(codec, seconds) of each clip of a video task, read from our storage."""
    probed = []
    for item in task["videoUrls"]:
        response = Client().get(urlsplit(item["url"]).path)
        assert (response.status_code, response["Content-Type"]) == (200, "video/mp4")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        with av.open(io.BytesIO(body)) as container:
            probed.append(
                (container.streams.video[0].codec_context.name, container.duration / 1_000_000)
            )
    return probed


def test_animate_extend_and_a_start_frame_through_the_worker(
    api: APIClient, fake_discord: FakeDiscordThread
) -> None:
    before = fake_discord.stats()
    submitted = api.post("/mj/submit/imagine", {"prompt": "a harbour at dawn"}, format="json")
    assert submitted.json()["code"] == 1, submitted.json()
    grid = mj_fetch(api, submitted.json()["result"])
    upscaled = mj_press(api, grid, "U1")

    animated = mj_press(api, upscaled, "Animate (Low motion)")
    assert animated["action"] == "VIDEO"
    assert downloadable(animated["imageUrl"])  # the poster
    assert [codec for codec, _s in _clips(animated)] == ["h264"] * 4
    assert animated["videoUrl"] == animated["videoUrls"][0]["url"]
    assert all(4.5 <= seconds <= 5.5 for _c, seconds in _clips(animated))
    # The worker pressed the bot's own Animate button on the upscale's message.
    assert DiscordJob.objects.filter(
        task_id=animated["id"], command__startswith="MJ::JOB::animate_low::1::"
    ).exists()

    extended = mj_press(api, animated, "Extend (High motion)")
    assert len(extended["videoUrls"]) == 4
    assert all(8.5 <= seconds <= 9.5 for _c, seconds in _clips(extended))

    started = api.post(
        "/mj/submit/video",
        {"prompt": "boats rock gently", "base64": png_data_url((30, 120, 200)), "batchSize": 1},
        format="json",
    ).json()
    assert started["code"] == 1, started
    framed = mj_fetch(api, started["result"])
    assert [codec for codec, _s in _clips(framed)] == ["h264"]
    sent = DiscordJob.objects.get(task_id=framed["id"], command="imagine")
    assert "boats rock gently --video 1 --motion low --bs 1" in sent.prompt

    stats = fake_discord.stats()
    assert stats["duplicate_nonces"] == before["duplicate_nonces"]
