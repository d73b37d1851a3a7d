"""Expired result links are read again, for video clips as for images.

Discord's attachment links are signed and expire (``ex``/``is``/``hm``; 24 hours); its CDN then
answers 404, and a message read over the API names its files with links that are valid again.
An image's download already read the result message again (``around`` it, the single-message
route being bot-only) for a fresh link; a video's clips were downloaded with the links their
messages had when the bot posted them, so a poll after they expired failed the task with
"Discord's CDN no longer has the result". The fake's CDN now checks the signature and expiry
as Discord's does (before, it served any link for ever).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from apps.engines.discord import options as discord_options
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.fake.render import grid_png
from apps.engines.discord.fake.server import CONTENT_GONE, LINK_SECONDS
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.discord.rest import DiscordRest

from .conftest import GatewayThread, job_for, poll_until_done

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

#: Longer than a link lives: every link issued so far has expired.
A_DAY_AND_MORE = LINK_SECONDS + 3600


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _finished(engine: DiscordEngine, job: Any) -> tuple[Any, Any]:
    submitted = engine.submit(job)
    running = replace(job, upstream_job_id=submitted.upstream_job_id, state=submitted.state)
    result = poll_until_done(engine, running)
    assert result.status == "success", result.fail_reason
    return running, result


@pytest.fixture
def connected(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> Callable[[], Any]:
    def connect() -> Any:
        account, _token = make_account()
        gateway(account_ids={account.pk}).wait_connected(account.pk)
        return account

    return connect


def _expire_every_link(fake: FakeDiscordThread) -> None:
    fake.control("cdn/clock", {"advance": A_DAY_AND_MORE})


def _gone(url: str) -> bool:
    response = httpx.get(url, timeout=10)
    return response.status_code == 404 and response.text == CONTENT_GONE


def test_an_expired_clip_link_is_read_again_from_its_message(
    engine: DiscordEngine, connected: Callable[[], Any], fake_discord: FakeDiscordThread
) -> None:
    account = connected()
    job, first = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="waves rolling in",
            images=(_png(),),
            params={"variant": "start_frame", "motion": "low", "batch_size": 2, "manual": True},
        ),
    )
    clips = DiscordJob.objects.filter(task_id=job.task_id, command__contains="virtual_upscale")
    links = {clip.pk: clip.image_url for clip in clips}
    assert len(links) == 2 and all(links.values())

    _expire_every_link(fake_discord)
    assert all(_gone(link) for link in links.values())  # the CDN refuses them now

    again = engine.poll(job)

    assert again.status == "success", again.fail_reason
    assert [video.data for video in again.videos] == [video.data for video in first.videos]
    assert again.image is not None and again.image.data == first.image.data  # the poster
    for clip in clips:
        clip.refresh_from_db()
        assert clip.phase == Phase.SUCCESS
        assert clip.image_url != links[clip.pk] and clip.image_url.endswith("&")
        assert ".mp4?" in clip.image_url  # the clip's MP4, read from its message again
        assert not _gone(clip.image_url)


def test_an_expired_image_link_is_read_again_the_same_way(
    engine: DiscordEngine, connected: Callable[[], Any], fake_discord: FakeDiscordThread
) -> None:
    account = connected()
    job, first = _finished(engine, job_for(account, prompt="a lighthouse at dusk"))
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    expired = row.image_url

    _expire_every_link(fake_discord)
    assert _gone(expired)

    again = engine.poll(job)

    assert again.status == "success", again.fail_reason
    assert again.image is not None and again.image.data == first.image.data
    row.refresh_from_db()
    assert row.image_url != expired and not _gone(row.image_url)


def test_the_fake_cdn_checks_signed_links_as_discord_does(
    make_account: Callable[..., Any], fake_discord: FakeDiscordThread
) -> None:
    """A posted file's link works until it expires; unsigned or tampered, it never does; the
    message read from the channel's history names the same link while it is valid, and a
    fresh one once it has expired. (A video's clips are attachments like any other.)"""
    account, _token = make_account()
    settings = discord_options.parse(account.options, account.secrets)
    rest = DiscordRest(account_id=account.pk, settings=settings)
    try:
        uploaded = rest.upload(settings.channel_id, "clip.mp4", b"\x00\x00\x00\x18ftypmp42")
        posted = rest.post_message(
            settings.channel_id,
            content="",
            attachments=[{"id": "0", "filename": "clip.mp4", "uploaded_filename": uploaded}],
        )
        link = str(posted["attachments"][0]["url"])
        assert {"ex", "is", "hm"} <= set(httpx.URL(link).params.keys())
        assert httpx.get(link, timeout=10).content == b"\x00\x00\x00\x18ftypmp42"
        assert _gone(link.split("?")[0])
        assert _gone(link.replace("hm=", "hm=0"))
        read = rest.message(settings.channel_id, str(posted["id"]))
        assert read is not None and read["attachments"][0]["url"] == link

        _expire_every_link(fake_discord)

        assert _gone(link)
        read = rest.message(settings.channel_id, str(posted["id"]))
        assert read is not None
        fresh = str(read["attachments"][0]["url"])
        assert fresh != link and fresh.split("?")[0] == link.split("?")[0]
        assert httpx.get(fresh, timeout=10).content == b"\x00\x00\x00\x18ftypmp42"
        # An image's link the same: the bot's results and the posted frames alike.
        uploaded = rest.upload(settings.channel_id, "grid_0.png", grid_png("result"))
        image = rest.post_message(
            settings.channel_id,
            content="",
            attachments=[{"id": "0", "filename": "grid_0.png", "uploaded_filename": uploaded}],
        )
        assert not _gone(str(image["attachments"][0]["url"]))
    finally:
        rest.close()
