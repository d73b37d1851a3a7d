"""Animate Manually (and a remixed Extend) on a mjproxy upstream with settings of its own.

The upstream's animate/extend form (MJ::AnimateModal, answered in /mj/submit/modal) takes a
prompt only: a batch other than 4, a loop, an end frame or the other motion would be lost
there, and the upstream would make (and we would keep) something else than the task is
priced for. Such a job goes to trueai-org's /mj/submit/video with them as its SubmitVideoDTO
fields instead: the parent's image for an animate, ``action: extend`` for an extension.
"""

from __future__ import annotations

import base64

import pytest

from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import ModalInput, task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from apps.tasks.services.video import task_submit_video
from apps.tasks.storage import read_file

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db


def _caller(organization, live_key) -> Caller:
    return Caller(organization=organization, api_key=live_key.api_key)


def _finish(fake, task_id: str) -> Task:
    task = start(task_id)
    assert task.status == Status.IN_PROGRESS, (task.fail_reason, task.error_code)
    fake.finish(task.upstream_job_id)
    done = poll(task.pk)
    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    return done


def _upscale(fake, caller: Caller) -> Task:
    grid = _finish(fake, task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox").task.pk)
    u1 = next(b["custom_id"] for b in grid.buttons if b["label"] == "U1")
    return _finish(fake, task_press(caller=caller, parent_id=grid.pk, custom_id=u1).task.pk)


def _manual(upscale: Task, motion: str) -> str:
    auto = next(b["custom_id"] for b in upscale.buttons if f"animate_{motion}::" in b["custom_id"])
    return f"MJ::AnimateModal::{auto.split('::')[4]}::1::{motion}::0"


def test_animate_manually_with_a_batch_and_a_loop_goes_to_the_video_route(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    upscale = _upscale(fake, caller)
    waiting = task_press(caller=caller, parent_id=upscale.pk, custom_id=_manual(upscale, "high"))
    actions_before = len(fake.submits("/mj/submit/action"))

    task_submit_modal(caller=caller, task_id=waiting.task.pk, prompt="the fox runs --bs 1 --loop")
    video = _finish(fake, waiting.task.pk)

    (sent,) = fake.submits("/mj/submit/video")
    body = sent.body
    assert (body["prompt"], body["motion"], body["batchSize"], body["loop"]) == (
        "the fox runs",
        "high",
        1,
        True,
    )
    assert body["videoType"] == "vid_1.1_i2v_480" and "action" not in body
    # The start frame is the upscale's image as we stored it.
    sent_image = base64.b64decode(body["image"].split(",", 1)[1])
    assert sent_image == read_file(upscale.result["image"])
    # Nothing went through the animate form, which would have dropped the settings.
    assert len(fake.submits("/mj/submit/action")) == actions_before
    assert fake.requests_to("/mj/submit/modal") == []
    assert fake.jobs[video.upstream_job_id].batch_size == 1
    assert len(video.result["videos"]) == 1
    assert video.price == 112_000 // 4


def test_animate_manually_with_the_other_motion_or_an_end_frame_sends_them(funded, live_key, fake):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    upscale = _upscale(fake, caller)
    end = png_bytes((250, 20, 20))

    other_motion = task_press(
        caller=caller,
        parent_id=upscale.pk,
        custom_id=_manual(upscale, "high"),
        modal=ModalInput(prompt="the fox sits --motion low"),
    ).task
    _finish(fake, other_motion.pk)
    ending = task_press(
        caller=caller,
        parent_id=upscale.pk,
        custom_id=_manual(upscale, "low"),
        modal=ModalInput(prompt=f"the fox sleeps --end {data_url(end)}"),
    ).task
    done = _finish(fake, ending.pk)

    first, second = (r.body for r in fake.submits("/mj/submit/video"))
    assert (first["motion"], first["batchSize"], first["loop"]) == ("low", 4, False)
    assert "endImage" not in first
    assert (second["motion"], second["prompt"]) == ("low", "the fox sleeps")
    assert base64.b64decode(second["endImage"].split(",", 1)[1]) == end
    assert fake.jobs[done.upstream_job_id].end_image == second["endImage"]
    assert fake.requests_to("/mj/submit/modal") == []


def test_a_remixed_extend_with_a_batch_goes_to_the_video_route_as_an_extension(
    funded, live_key, fake
):
    mjproxy_account(fake)
    caller = _caller(funded, live_key)
    video = _finish(
        fake,
        task_submit_video(
            caller=caller, images=[data_url(png_bytes())], batch_size=2, motion="high"
        ).task.pk,
    )
    extend = next(
        b["custom_id"] for b in video.buttons if "animate_low_extend::2::" in b["custom_id"]
    )

    pressed = task_press(
        caller=caller,
        parent_id=video.pk,
        custom_id=extend,
        remix=True,
        modal=ModalInput(prompt="the tide goes out --bs 2"),
    ).task
    extended = _finish(fake, pressed.pk)

    body = fake.submits("/mj/submit/video")[-1].body
    assert (body["action"], body["taskId"], body["index"]) == ("extend", video.upstream_job_id, 1)
    assert (body["prompt"], body["motion"], body["batchSize"]) == ("the tide goes out", "low", 2)
    assert "image" not in body
    assert fake.requests_to("/mj/submit/modal") == []
    assert len(extended.result["videos"]) == 2
