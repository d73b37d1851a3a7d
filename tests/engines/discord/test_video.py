"""Video on the discord engine, against the fake bot: a start frame through ``/imagine … --video
1``, the Animate buttons of an upscale (automatic, through the Remix form, manual), extending a
clip (automatic, manual), loop and batch size. Every clip is read back with PyAV."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import av
import pytest
from django.utils import timezone
from PIL import Image, ImageChops, ImageStat

from apps.engines.base import PermanentEngineError, StoredFile
from apps.engines.discord.engine import DiscordEngine
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob

from .conftest import GatewayThread, job_for, parent_of, poll_until_done, wait_for
from .test_engine_flow import _finished

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _png(colour: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), colour)
    image.paste((240, 240, 20), (16, 16, 40, 40))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _clip(data: bytes | None) -> tuple[str, float, list[Image.Image]]:
    """(codec, seconds, frames) of an MP4."""
    assert data is not None
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        seconds = (container.duration or 0) / 1_000_000
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return codec, seconds, frames


def _difference(one: Image.Image, two: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(one, two)).mean) / 3


def _window_match(frame: Image.Image, picture: bytes) -> float:
    """How close ``frame`` comes to the best window of ``picture`` scaled to one and a half
    times the frame's side (the fake bot's pan), over every position."""
    width, height = frame.size
    canvas = (
        Image.open(io.BytesIO(picture)).convert("RGB").resize((width * 3 // 2, height * 3 // 2))
    )
    spare_x, spare_y = canvas.width - width, canvas.height - height
    return min(
        _difference(frame, canvas.crop((left, top, left + width, top + height)))
        for left in range(spare_x + 1)
        for top in range(spare_y + 1)
    )


def _video_params(**params: Any) -> dict[str, Any]:
    return {
        "variant": "start_frame",
        "motion": "low",
        "batch_size": 4,
        "loop": False,
        "extend": False,
        "manual": False,
        **params,
    }


@pytest.fixture
def connected(
    make_account: Callable[..., Any], gateway: Callable[..., GatewayThread]
) -> Callable[..., tuple[Any, GatewayThread]]:
    def connect(**fake_user: Any) -> tuple[Any, GatewayThread]:
        account, _token = make_account(fake_user=fake_user)
        thread = gateway(account_ids={account.pk})
        thread.wait_connected(account.pk)
        return account, thread

    return connect


def _upscaled(engine: DiscordEngine, account: Any) -> tuple[Any, Any]:
    imagine, grid = _finished(engine, job_for(account, prompt="a lighthouse at dusk"))
    pressed = next(
        b["custom_id"]
        for b in grid.state["buttons"]
        if b["custom_id"].startswith("MJ::JOB::upsample::1::")
    )
    return _finished(
        engine,
        job_for(
            account,
            action="UPSCALE",
            custom_id=pressed,
            parent=parent_of(imagine, grid.state),
            params={"variant": "upsample", "index": 1, "custom_id": pressed},
        ),
    )


def _start_frame_video(engine: DiscordEngine, account: Any, **params: Any) -> tuple[Any, Any]:
    return _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="waves rolling in",
            images=(_png(),),
            params=_video_params(manual=True, **params),
        ),
    )


def test_a_start_frame_with_a_prompt_high_motion_a_batch_of_two_and_a_loop(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, thread = connected()
    job, result = _start_frame_video(engine, account, motion="high", batch_size=2, loop=True)

    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    assert row.command == "imagine"
    assert row.prompt.endswith("waves rolling in --video 1 --motion high --bs 2 --loop --fast")
    assert row.prompt.startswith("http")  # the start frame, posted in the channel first
    assert len(result.videos) == 2
    for video in result.videos:
        codec, seconds, frames = _clip(video.data)
        assert codec == "h264"
        assert 4.5 <= seconds <= 5.5
        # A loop ends where it starts.
        assert _difference(frames[0], frames[-1]) < 8
    # The poster is the first clip's first frame, as a picture.
    poster = Image.open(io.BytesIO(result.image.data))
    assert poster.format == "PNG" and poster.size == _clip(result.videos[0].data)[2][0].size
    assert result.is_grid is False and result.properties["batchSize"] == 2
    # Each clip was shown alone ("Video #n") by pressing its U button; their Extend buttons
    # are kept for extending.
    shown = DiscordJob.objects.filter(task_id=job.task_id).exclude(pk=row.pk)
    assert sorted(r.command.split("::")[3] for r in shown) == ["1", "2"]
    assert all("::video_virtual_upscale::" in r.command for r in shown)
    clips = result.state["clips"]
    assert len(clips) == 2
    for clip in clips:
        ids = [b["custom_id"] for b in clip["buttons"]]
        assert any(i.startswith("MJ::JOB::animate_high_extend::1::") for i in ids)
        assert any(i.startswith("MJ::JOB::animate_low_extend::1::") for i in ids)
    # "Animating..." (the bot's reply with our nonce) and its "(NN%)" edits were read as the
    # job's progress, which the gateway pushed; then it told the lifecycle the job was done.
    assert row.message_id and row.bot_prompt.startswith(row.prompt)
    assert any(
        u.task_id == job.task_id and u.result.status == "running" and 0 < u.result.progress < 100
        for u in thread.updates
    ), thread.updates
    assert any(u.task_id == job.task_id and u.result.status == "success" for u in thread.updates), (
        thread.updates
    )


@pytest.mark.parametrize("motion", ["low", "high"])
def test_the_animate_buttons_of_an_upscale(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]], motion: str
) -> None:
    account, _thread = connected()
    upscale, upscaled = _upscaled(engine, account)
    pressed = next(
        b["custom_id"]
        for b in upscaled.state["buttons"]
        if b["custom_id"].startswith(f"MJ::JOB::animate_{motion}::1::")
    )
    assert pressed.endswith("::SOLO")
    job, result = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt=upscale.prompt,
            custom_id=pressed,
            parent=parent_of(upscale, upscaled.state),
            params={"variant": f"animate_{motion}", "index": None, "custom_id": pressed},
        ),
    )
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    assert row.command == pressed
    assert f"--motion {motion} --video 1" in row.bot_prompt
    assert len(result.videos) == 4
    assert {_clip(v.data)[0] for v in result.videos} == {"h264"}


def test_with_remix_mode_animate_answers_the_form_with_the_bots_own_prompt(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, _thread = connected(remix=True)
    upscale, upscaled = _upscaled(engine, account)
    job, result = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="",
            parent=parent_of(upscale, upscaled.state),
            params=_video_params(variant="animate", index=1),
        ),
    )
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    assert row.command.startswith("MJ::JOB::animate_low::1::")
    assert row.modal["custom_id"].startswith("MJ::AnimateModal::")
    assert row.bot_prompt.startswith("a lighthouse at dusk")
    assert "--motion low --video 1" in row.bot_prompt
    assert len(result.videos) == 4


def test_a_manual_animate_starts_from_the_parents_image_through_imagine(
    engine: DiscordEngine,
    connected: Callable[..., tuple[Any, GatewayThread]],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _thread = connected()
    upscale, upscaled = _upscaled(engine, account)
    picture = upscaled.image.data
    parent = replace(
        parent_of(upscale, upscaled.state), grid=StoredFile("up.png", lambda _name: picture)
    )
    uploads = fake_discord.stats().get("uploads", 0)
    job, result = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="the beam sweeps the sea",
            parent=parent,
            params=_video_params(variant="animate", manual=True, index=1, batch_size=1),
        ),
    )
    row = DiscordJob.objects.get(pk=job.upstream_job_id)
    assert row.command == "imagine"
    assert "the beam sweeps the sea --video 1 --motion low --bs 1" in row.prompt
    assert fake_discord.stats().get("uploads", 0) == uploads + 1
    assert len(result.videos) == 1
    # The clip starts from the upscale's picture: its first frame is a window onto that
    # picture (the fake bot pans a view half as large again as the clip across it). Found
    # among every window of the picture, it matches one within the video codec's loss; a
    # frame made from anything else would match none.
    first = _clip(result.videos[0].data)[2][0]
    best = _window_match(first, picture)
    assert best < 8
    assert best < _difference(first, Image.new("RGB", first.size, (255, 255, 255))) / 4


def test_extending_clips_automatically_and_through_the_extend_button(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, _thread = connected()
    video, made = _start_frame_video(engine, account, batch_size=2)
    parent = parent_of(video, made.state)
    extend, extended = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="",
            parent=parent,
            params=_video_params(variant="extend", extend=True, motion="high", index=2),
        ),
    )
    row = DiscordJob.objects.get(pk=extend.upstream_job_id)
    assert row.parent_message_id == made.state["clips"][1]["message_id"]
    assert row.command.startswith("MJ::JOB::animate_high_extend::1::")
    assert len(extended.videos) == 4
    for clip in extended.videos:
        codec, seconds, _frames = _clip(clip.data)
        assert codec == "h264" and 8.5 <= seconds <= 9.5

    # The domain's own Extend button (our job hash) presses the bot's on that clip.
    ours = "MJ::JOB::animate_low_extend::1::" + "ab" * 16
    again, longer = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="",
            custom_id=ours,
            parent=parent_of(extend, extended.state),
            params={"variant": "animate_low_extend", "index": 1, "custom_id": ours},
        ),
    )
    row = DiscordJob.objects.get(pk=again.upstream_job_id)
    assert row.command.startswith("MJ::JOB::animate_low_extend::1::")
    assert row.parent_message_id == extended.state["clips"][0]["message_id"]
    assert 12.5 <= _clip(longer.videos[0].data)[1] <= 13.5


def test_a_manual_extension_goes_through_the_animate_form(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, _thread = connected(remix=True)
    video, made = _start_frame_video(engine, account, batch_size=1)
    extend, extended = _finished(
        engine,
        job_for(
            account,
            action="VIDEO",
            prompt="the tide goes out",
            parent=parent_of(video, made.state),
            params=_video_params(variant="extend", extend=True, manual=True, index=1),
        ),
    )
    row = DiscordJob.objects.get(pk=extend.upstream_job_id)
    assert row.modal["custom_id"].startswith("MJ::AnimateModal::")
    assert row.modal["custom_id"].endswith("::low::1")
    assert row.bot_prompt.startswith("the tide goes out --motion low --video 1")
    assert len(extended.videos) == 4


def test_without_remix_mode_a_manual_extension_fails_clearly(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, _thread = connected(remix=False)
    video, made = _start_frame_video(engine, account, batch_size=1)
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(
            job_for(
                account,
                action="VIDEO",
                prompt="the tide goes out",
                parent=parent_of(video, made.state),
                params=_video_params(variant="extend", extend=True, manual=True, index=1),
            )
        )
    assert caught.value.error_code == "UNSUPPORTED_BY_UPSTREAM"
    assert "Remix mode" in caught.value.message


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (_video_params(variant="extend", extend=True, batch_size=2, index=1), "UNSUPPORTED"),
        (_video_params(variant="extend", extend=True, index=3), "INVALID_PARAMETER"),
    ],
)
def test_an_extension_the_bot_cannot_make_is_refused_before_anything_is_sent(
    engine: DiscordEngine,
    connected: Callable[..., tuple[Any, GatewayThread]],
    fake_discord: FakeDiscordThread,
    params: dict[str, Any],
    code: str,
) -> None:
    account, _thread = connected()
    video, made = _start_frame_video(engine, account, batch_size=2)
    before = fake_discord.stats()["interactions"]
    job = job_for(
        account, action="VIDEO", prompt="", parent=parent_of(video, made.state), params=params
    )
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code.startswith(code)
    assert not DiscordJob.objects.filter(task_id=job.task_id).exists()
    assert fake_discord.stats()["interactions"] == before


def test_a_bad_start_frame_fails_as_the_bot_says(
    engine: DiscordEngine, connected: Callable[..., tuple[Any, GatewayThread]]
) -> None:
    account, _thread = connected()
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(
            job_for(
                account,
                action="VIDEO",
                prompt="",
                images=(b"not a picture",),
                params=_video_params(),
            )
        )
    assert caught.value.error_code == "INVALID_PARAMETER"


def _video_with_a_clip_press(engine: DiscordEngine, account: Any, nonce: str, **press: Any) -> Any:
    """A one-clip video the bot finished, and a press of its U1 button written by a poll's
    worker (``press``: the row's other fields, such as ``sending_at``). The running job."""
    job = job_for(
        account, action="VIDEO", prompt="", images=(_png(),), params=_video_params(batch_size=1)
    )
    submitted = engine.submit(job)
    main = wait_for(
        lambda: DiscordJob.objects.filter(pk=submitted.upstream_job_id, phase="success").first()
    )
    button = next(
        b["custom_id"]
        for b in main.components[0]["components"]
        if "video_virtual" in b["custom_id"]
    )
    DiscordJob.objects.create(
        nonce=nonce,
        account_id=account.pk,
        task_id=job.task_id,
        action="VIDEO",
        command=button,
        bot_id=main.bot_id,
        channel_id=main.channel_id,
        parent_message_id=main.result_message_id,
        **press,
    )
    return replace(job, upstream_job_id=submitted.upstream_job_id, state=submitted.state)


def test_a_clip_press_whose_worker_died_before_sending_is_pressed_again(
    engine: DiscordEngine,
    connected: Callable[..., tuple[Any, GatewayThread]],
    fake_discord: FakeDiscordThread,
) -> None:
    account, _thread = connected()
    # A poll's worker wrote the press of U1 and died before it left (no sending_at).
    running = _video_with_a_clip_press(engine, account, "1" * 18)
    assert engine.poll(running).status == "running"  # still within the press's lock time
    DiscordJob.objects.filter(pk="1" * 18).update(created_at=timezone.now() - timedelta(seconds=60))
    presses = fake_discord.stats()["interactions"]
    result = poll_until_done(engine, running)
    assert result.status == "success" and len(result.videos) == 1
    assert DiscordJob.objects.get(pk="1" * 18).phase == "refused"
    assert fake_discord.stats()["interactions"] == presses + 1


def test_a_clip_press_acknowledged_while_it_was_judged_lost_is_not_pressed_again(
    engine: DiscordEngine,
    connected: Callable[..., tuple[Any, GatewayThread]],
    fake_discord: FakeDiscordThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A press sent long ago with no acknowledgement on record looks lost; Discord's
    acknowledgement reaches the gateway between that look and the close. The close is a
    compare-and-set on what was judged, so the press is not closed, and not pressed twice."""
    account, _thread = connected()
    running = _video_with_a_clip_press(
        engine, account, "2" * 18, sending_at=timezone.now() - timedelta(minutes=5)
    )
    original = DiscordEngine._close_lost
    closes: list[bool] = []

    def acknowledged_meanwhile(row: DiscordJob, reason: str) -> bool:
        # What the gateway writes when Discord acknowledges the interaction.
        DiscordJob.objects.filter(pk=row.pk).update(interaction_id="1234567890777")
        closes.append(original(row, reason))
        return closes[-1]

    monkeypatch.setattr(DiscordEngine, "_close_lost", staticmethod(acknowledged_meanwhile))
    presses = fake_discord.stats()["interactions"]
    assert engine.poll(running).status == "running"
    assert closes == [False]
    press = DiscordJob.objects.get(pk="2" * 18)
    assert press.phase == "prepared" and press.interaction_id == "1234567890777"
    assert fake_discord.stats()["interactions"] == presses


@pytest.mark.parametrize(
    ("params", "end_frame"),
    [(_video_params(resolution="720p"), False), (_video_params(), True)],
    ids=["hd-720p", "end-frame"],
)
def test_hd_clips_and_end_frames_are_refused_before_anything_is_sent(
    engine: DiscordEngine,
    connected: Callable[..., tuple[Any, GatewayThread]],
    fake_discord: FakeDiscordThread,
    params: dict[str, Any],
    end_frame: bool,
) -> None:
    # The bot offers neither (they are midjourney.com settings): coming back as SD clips that
    # end anywhere would drop what the customer asked for and paid for.
    account, _thread = connected()
    before = fake_discord.stats()["interactions"]
    job = job_for(account, action="VIDEO", prompt="", images=(_png(),), params=params)
    if end_frame:
        ending = _png((200, 40, 40))
        job = replace(job, references={"end": (StoredFile("end.png", lambda _name: ending),)})
    with pytest.raises(PermanentEngineError) as caught:
        engine.submit(job)
    assert caught.value.error_code == "UNSUPPORTED_BY_UPSTREAM"
    assert ("HD (720p)" if not end_frame else "end frame") in caught.value.message
    assert not DiscordJob.objects.filter(task_id=job.task_id).exists()
    assert fake_discord.stats()["interactions"] == before
