"""VIDEO tasks through the sandbox: real MP4 clips, animate/extend buttons, batch pricing."""

from __future__ import annotations

import io

import av
import pytest

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.core.errors import ValidationFailed
from apps.tasks import storage
from apps.tasks.actions import press_spec
from apps.tasks.buttons import buttons_of
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit
from apps.tasks.services.video import task_submit_video

from .helpers import png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

VIDEO_FAST = 112_000  # the seeded FAST price of a batch of 4 (8x an imagine)


def probe(name: str) -> tuple[str, float, int]:
    """(codec, seconds, frames) of a stored clip, read back with PyAV."""
    with av.open(io.BytesIO(storage.read_file(name))) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return stream.codec_context.name, (container.duration or 0) / 1_000_000, frames


def test_a_start_frame_becomes_a_batch_of_h264_clips_charged_by_batch(caller, fund, organization):
    fund(organization, 200_000)
    sandbox_account()
    outcome = task_submit_video(
        caller=caller,
        prompt="waves roll in --motion high",
        images=[png_data_url(size=(96, 64))],
        batch_size=2,
    )
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS, task.fail_reason
    assert task.action == Action.VIDEO
    assert task.params["motion"] == "high" and task.params["batch_size"] == 2
    assert task.prompt_en == "waves roll in"
    videos = task.result["videos"]
    assert len(videos) == 2 and all(name.endswith(".mp4") for name in videos)
    codec, seconds, frames = probe(videos[0])
    assert codec == "h264"
    assert 4.5 <= seconds <= 5.5
    assert frames > 24
    # The poster is the first frame, an image.
    assert task.result["image"].endswith(".png")
    # A batch of 2 costs half the row of a batch of 4, captured on success.
    assert task.price == VIDEO_FAST // 2
    kinds = list(LedgerEntry.objects.filter(task=task).values_list("kind", flat=True))
    assert sorted(kinds) == sorted([EntryKind.HOLD, EntryKind.CAPTURE])
    assert balance_get(organization=organization).available == 200_000 - VIDEO_FAST // 2
    # Extend buttons for each clip of the batch, with Midjourney's ids.
    ids = [b.custom_id for b in buttons_of(task.buttons)]
    job_hash = task.properties["jobHash"]
    assert ids == [
        f"MJ::JOB::animate_high_extend::1::{job_hash}",
        f"MJ::JOB::animate_low_extend::1::{job_hash}",
        f"MJ::JOB::animate_high_extend::2::{job_hash}",
        f"MJ::JOB::animate_low_extend::2::{job_hash}",
    ]


def test_animate_on_an_upscale_then_extend_a_clip(caller, fund, organization):
    fund(organization, 1_000_000)
    sandbox_account()
    grid = run_to_completion(task_submit(caller=caller, action="IMAGINE", prompt="a fox").task.pk)
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=grid.buttons[0]["custom_id"]).task.pk
    )
    animate = [b for b in buttons_of(upscale.buttons) if "animate_" in b.custom_id]
    job_hash = upscale.properties["jobHash"]
    assert [b.custom_id for b in animate] == [
        f"MJ::JOB::animate_high::1::{job_hash}::SOLO",
        f"MJ::JOB::animate_low::1::{job_hash}::SOLO",
    ]
    assert [b.label for b in animate] == ["Animate (High motion)", "Animate (Low motion)"]
    video = run_to_completion(
        task_press(caller=caller, parent_id=upscale.pk, custom_id=animate[1].custom_id).task.pk
    )
    assert video.status == Status.SUCCESS, video.fail_reason
    assert video.action == Action.VIDEO and video.parent_id == upscale.pk
    assert len(video.result["videos"]) == 4
    assert video.price == VIDEO_FAST
    # Extend clip 3 with a prompt (manual) through the service; the press path works too.
    extended = run_to_completion(
        task_submit_video(
            caller=caller, parent_id=video.pk, index=3, extend=True, batch_size=1, prompt="zoom"
        ).task.pk
    )
    assert extended.status == Status.SUCCESS, extended.fail_reason
    codec, seconds, _ = probe(extended.result["videos"][0])
    assert codec == "h264" and 8.5 <= seconds <= 9.5  # 5 s + 4 s
    assert extended.price == VIDEO_FAST // 4
    pressed = task_press(caller=caller, parent_id=video.pk, custom_id=video.buttons[0]["custom_id"])
    assert pressed.task.params["variant"] == press_spec("animate_high_extend").key
    done = run_to_completion(pressed.task.pk)
    assert done.status == Status.SUCCESS, done.fail_reason


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"motion": "wild"}, "motion"),
        ({"batch_size": 3}, "batch_size"),
        ({"images": []}, "images"),
        ({"extend": True}, "parent"),
    ],
)
def test_bad_video_input_is_refused_and_nothing_moves(caller, fund, organization, kwargs, field):
    fund(organization, 200_000)
    arguments = {"images": [png_data_url()], **kwargs}
    with pytest.raises(ValidationFailed) as caught:
        task_submit_video(caller=caller, **arguments)
    assert getattr(caught.value, "field", None) == field
    assert not Task.objects.exists()
    assert not LedgerEntry.objects.filter(kind=EntryKind.HOLD).exists()
