"""VIDEO on the mjproxy engine: trueai-org's Plus route, or a clear error where it is missing."""

from __future__ import annotations

import base64
import io

import av
import pytest

from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.services.video import task_submit_video
from apps.tasks.storage import read_file

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db


def _caller(organization, live_key) -> Caller:
    return Caller(organization=organization, api_key=live_key.api_key)


def _finish(fake, task_id: str):
    task = start(task_id)
    assert task.status == Status.IN_PROGRESS, (task.fail_reason, task.error_code)
    fake.finish(task.upstream_job_id)
    done = poll(task.pk)
    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    return done


def _codec(name: str) -> str:
    with av.open(io.BytesIO(read_file(name))) as container:
        return str(container.streams.video[0].codec_context.name)


def test_a_start_frame_goes_to_the_plus_video_route_and_the_clips_are_ours(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    outcome = task_submit_video(
        caller=caller,
        prompt="the tide comes in",
        images=[data_url(png_bytes())],
        motion="high",
        batch_size=2,
        loop=True,
    )
    done = _finish(fake, outcome.task.pk)
    (sent,) = fake.submits("/mj/submit/video")
    assert sent.body["prompt"] == "the tide comes in"
    assert (sent.body["motion"], sent.body["batchSize"], sent.body["loop"]) == ("high", 2, True)
    # trueai-org's SubmitVideoDTO: the start frame in ``image``, SD unless asked.
    assert sent.body["image"].startswith("data:image/png;base64,")
    assert sent.body["videoType"] == "vid_1.1_i2v_480" and "endImage" not in sent.body
    assert done.action == Action.VIDEO
    assert len(done.result["videos"]) == 2
    assert all(_codec(name) == "h264" for name in done.result["videos"])
    # Extend clip 2: the upstream's own task id, trueai's action=extend, its index from 0.
    extend = task_submit_video(caller=caller, parent_id=done.pk, extend=True, index=2)
    extended = _finish(fake, extend.task.pk)
    body = fake.submits("/mj/submit/video")[-1].body
    assert (body["action"], body["taskId"], body["index"]) == (
        "extend",
        done.upstream_job_id,
        1,
    )
    assert len(extended.result["videos"]) == 4


def test_the_animate_button_of_an_upscale_is_pressed_upstream(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    grid = _finish(fake, task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox").task.pk)
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    upscale = _finish(fake, task_press(caller=caller, parent_id=grid.pk, custom_id=u1).task.pk)
    animate = next(b["custom_id"] for b in upscale.buttons if "animate_low" in b["custom_id"])
    video = _finish(
        fake, task_press(caller=caller, parent_id=upscale.pk, custom_id=animate).task.pk
    )
    sent = fake.submits("/mj/submit/action")[-1].body
    assert sent["taskId"] == upscale.upstream_job_id
    assert "animate_low" in sent["customId"]
    assert len(video.result["videos"]) == 4
    assert _codec(video.result["videos"][0]) == "h264"


def test_an_upstream_without_video_fails_the_task_clearly_and_refunds(funded, live_key, fake):
    fake.supports_video = False
    mjproxy_account(fake)
    outcome = task_submit_video(caller=_caller(funded, live_key), images=[data_url(png_bytes())])
    task = start(outcome.task.pk)
    assert task.status == Status.FAILURE
    assert task.error_code == ErrorCode.UNSUPPORTED_BY_UPSTREAM
    assert "/mj/submit/video" in task.fail_reason
    assert task.tokens_charged == 0


def test_a_video_without_a_poster_gets_its_first_frame(funded, live_key, fake):
    fake.video_posters = False
    mjproxy_account(fake)
    outcome = task_submit_video(
        caller=_caller(funded, live_key), images=[data_url(png_bytes())], batch_size=1
    )
    done = _finish(fake, outcome.task.pk)
    assert fake.task_json(done.upstream_job_id)["imageUrl"] is None
    assert read_file(done.result["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(done.result["videos"]) == 1


def test_hd_and_an_end_frame_go_upstream_as_videotype_and_endimage(funded, live_key, fake):
    mjproxy_account(fake)
    end = png_bytes((250, 20, 20))
    outcome = task_submit_video(
        caller=_caller(funded, live_key),
        images=[data_url(png_bytes())],
        batch_size=1,
        resolution="720p",
        end_image=data_url(end),
    )
    done = _finish(fake, outcome.task.pk)
    (sent,) = fake.submits("/mj/submit/video")
    assert sent.body["videoType"] == "vid_1.1_i2v_720"
    assert base64.b64decode(sent.body["endImage"].split(",", 1)[1]) == end
    assert fake.jobs[done.upstream_job_id].video_type == "vid_1.1_i2v_720"
    assert done.price == 358_400 // 4  # the HD row, a batch of 1


def test_animate_manually_is_the_animate_press_with_remix_and_its_prompt_upstream(
    funded, live_key, fake
):
    """Discord has no "Animate Manually" button: the engine presses the upstream's animate with
    enableRemix (answered 21, Midjourney's MJ::AnimateModal form) and sends the prompt in
    /mj/submit/modal — when the prompt asks for nothing the button does not do already (a
    ``--motion`` equal to the button's); other settings go to the video route
    (test_video_manual_settings.py)."""
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    grid = _finish(fake, task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox").task.pk)
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    upscale = _finish(fake, task_press(caller=caller, parent_id=grid.pk, custom_id=u1).task.pk)
    auto = next(b["custom_id"] for b in upscale.buttons if "animate_high::" in b["custom_id"])
    manual = f"MJ::AnimateModal::{auto.split('::')[4]}::1::high::0"
    waiting = task_press(caller=caller, parent_id=upscale.pk, custom_id=manual).task
    assert waiting.status == Status.MODAL
    task_submit_modal(caller=caller, task_id=waiting.pk, prompt="the fox runs --motion high")
    video = _finish(fake, waiting.pk)
    sent = fake.submits("/mj/submit/action")[-1].body
    assert sent["taskId"] == upscale.upstream_job_id and sent["enableRemix"] is True
    assert sent["customId"].startswith("MJ::JOB::animate_high::")
    (modal,) = fake.requests_to("/mj/submit/modal")
    assert modal.body == {"taskId": video.upstream_job_id, "prompt": "the fox runs"}
    assert fake.submits("/mj/submit/video") == []
    assert len(video.result["videos"]) == 4
    assert _codec(video.result["videos"][0]) == "h264"
