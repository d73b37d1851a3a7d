"""The bot's video messages, parsed: MP4 attachments, the clip buttons, "Video #n"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.engines.discord import tracker, wire
from apps.engines.discord.models import DiscordJob, Phase

HASH = "26695e7d-3f6c-4923-a3b8-8a266a170d97"


def test_an_mp4_is_told_by_its_content_type_else_by_its_name() -> None:
    assert wire.is_video_attachment({"content_type": "video/mp4", "filename": "x.bin"})
    assert not wire.is_video_attachment({"content_type": "image/png", "filename": "x.mp4"})
    assert wire.is_video_attachment({"filename": f"user_{HASH}.mp4"})
    assert not wire.is_video_attachment({"filename": f"user_{HASH}.png"})


def test_a_video_message_offers_one_u_button_per_clip_and_a_clip_its_extend_buttons() -> None:
    batch = [f"MJ::JOB::video_virtual_upscale::{n}::{HASH}" for n in (1, 2)] + [
        f"MJ::JOB::reroll::0::{HASH}::SOLO"
    ]
    assert wire.video_clip_count(batch) == 2
    assert not wire.is_single_clip(batch)
    assert not wire.is_grid_result(batch)
    clip = [f"MJ::JOB::animate_high_extend::1::{HASH}", f"MJ::JOB::animate_low_extend::1::{HASH}"]
    assert wire.is_single_clip(clip) and wire.video_clip_count(clip) == 0
    # An upscale's Animate buttons are not a clip's.
    assert not wire.is_single_clip([f"MJ::JOB::animate_high::1::{HASH}::SOLO"])


def test_video_n_is_read_like_image_n_and_the_hash_comes_from_an_mp4_name() -> None:
    text = wire.parse_content("**a cat --motion low --video 1** - Video #3 <@42>")
    assert text is not None
    assert (text.image_index, text.user_id, text.progress, text.label) == (3, "42", None, "")
    message = {"attachments": [{"filename": f"user_{HASH}_0.mp4"}], "components": []}
    assert wire.job_hash(message) == HASH
    progress = wire.parse_content("**<https://x/a.png> sea --video 1** - <@42> (37%) (fast)")
    assert progress is not None and progress.progress == 37
    assert wire.parse_content("Animating...") is None


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_video_job_keeps_the_mp4_when_the_bot_attaches_a_picture_too(
    make_account: Callable[..., Any],
) -> None:
    account, _token = make_account()
    channel = str(account.options["channel_id"])
    row = DiscordJob.objects.create(
        nonce="9" * 18,
        account_id=account.pk,
        task_id="t" * 32,
        action="VIDEO",
        command="imagine",
        bot_id=wire.MIDJOURNEY_BOT_ID,
        channel_id=channel,
        phase=Phase.RUNNING,
    )
    cdn = "https://cdn.discordapp.com/attachments/1/2"
    message = {
        "id": "123",
        "channel_id": channel,
        "nonce": row.nonce,
        "author": {"id": wire.MIDJOURNEY_BOT_ID},
        "content": "**sea --video 1** - <@42> (fast)",
        "attachments": [
            {"url": f"{cdn}/poster.png", "filename": "poster.png", "content_type": "image/png"},
            {
                "url": f"{cdn}/u_{HASH}.mp4",
                "filename": f"u_{HASH}.mp4",
                "content_type": "video/mp4",
            },
        ],
        "components": [
            {
                "type": 1,
                "components": [
                    {"type": 2, "custom_id": f"MJ::JOB::video_virtual_upscale::1::{HASH}"}
                ],
            }
        ],
    }
    listener = tracker.Listener(account_id=account.pk, user_id="42", channels=frozenset({channel}))
    updates = tracker.message_seen(listener=listener, message=message)
    row.refresh_from_db()
    assert row.phase == Phase.SUCCESS and row.image_url == f"{cdn}/u_{HASH}.mp4"
    # The update is a hint: the clips are gathered by the engine's poll, nothing downloaded here.
    assert [u.result.status for u in updates] == ["success"]
    assert updates[0].result.image is None and updates[0].task_id == row.task_id
