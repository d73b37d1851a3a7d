"""HD (720p) video and end frames through the sandbox: real clips of the asked size that end on
the asked image, priced on their own row, and every bad combination refused with nothing moved."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from apps.billing.models import EntryKind, LedgerEntry, Price
from apps.billing.selectors import balance_get
from apps.core.errors import ValidationFailed
from apps.tasks import storage
from apps.tasks.enums import VIDEO_HD, Status
from apps.tasks.models import Task
from apps.tasks.services.video import task_submit_video

from .helpers import png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

HD_FAST = 358_400  # the seeded FAST row of an HD batch of 4 (3.2x an SD batch)
SD_FAST = 112_000


def probe(name: str) -> tuple[str, int, int, float, list[Image.Image]]:
    """(codec, width, height, seconds, frames) of a stored clip, read back with PyAV."""
    with av.open(io.BytesIO(storage.read_file(name))) as container:
        stream = container.streams.video[0]
        frames = [frame.to_image() for frame in container.decode(video=0)]
        return (
            stream.codec_context.name,
            stream.codec_context.width,
            stream.codec_context.height,
            (container.duration or 0) / 1_000_000,
            frames,
        )


def difference(one: Image.Image, other: Image.Image) -> float:
    """Mean absolute difference per channel (0: the same picture, 255: opposite)."""
    other = other.convert("RGB").resize(one.size)
    return sum(ImageStat.Stat(ImageChops.difference(one.convert("RGB"), other)).mean) / 3


def test_an_hd_video_is_a_720p_h264_clip_charged_on_the_hd_row(caller, fund, organization):
    fund(organization, 500_000)
    sandbox_account()
    outcome = task_submit_video(
        caller=caller,
        images=[png_data_url(size=(160, 90))],
        batch_size=1,
        resolution="720p",
    )
    assert outcome.task.price == HD_FAST // 4
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS, task.fail_reason
    assert task.params["resolution"] == "720p"
    codec, width, height, seconds, frames = probe(task.result["videos"][0])
    assert (codec, width, height) == ("h264", 1280, 720)
    assert 4.5 <= seconds <= 5.5 and len(frames) > 24
    assert task.properties["videoResolution"] == "720p"
    assert LedgerEntry.objects.filter(task=task, kind=EntryKind.CAPTURE).count() == 1
    assert balance_get(organization=organization).available == 500_000 - HD_FAST // 4


def test_an_sd_video_of_the_same_frame_stays_small_and_cheaper(caller, fund, organization):
    fund(organization, 500_000)
    sandbox_account()
    outcome = task_submit_video(
        caller=caller, images=[png_data_url(size=(160, 90))], batch_size=1, resolution="sd"
    )
    task = run_to_completion(outcome.task.pk)
    assert task.price == SD_FAST // 4 and task.params["resolution"] == "480p"
    _, width, height, _, _ = probe(task.result["videos"][0])
    assert max(width, height) <= 480


@pytest.mark.parametrize("how", ["field", "flag"])
def test_a_clip_with_an_end_frame_ends_on_that_image(caller, fund, organization, how):
    fund(organization, 500_000)
    sandbox_account()
    start, end = png_data_url((220, 30, 30), (96, 96)), png_data_url((20, 40, 230), (96, 96))
    if how == "field":
        outcome = task_submit_video(caller=caller, images=[start], batch_size=1, end_image=end)
    else:
        outcome = task_submit_video(
            caller=caller, prompt=f"the sea turns blue --end {end}", images=[start], batch_size=1
        )
        assert outcome.task.prompt_en == "the sea turns blue"
    task = run_to_completion(outcome.task.pk)
    assert task.status == Status.SUCCESS, task.fail_reason
    assert task.params["end_frame"] is True
    codec, _, _, seconds, frames = probe(task.result["videos"][0])
    assert codec == "h264" and 4.5 <= seconds <= 5.5
    blue = Image.new("RGB", frames[0].size, (20, 40, 230))
    red = Image.new("RGB", frames[0].size, (220, 30, 30))
    # It starts on the start frame and really ends on the end frame.
    assert difference(frames[0], red) < 12
    assert difference(frames[-1], blue) < 12
    assert difference(frames[len(frames) // 3], blue) > 60


def test_end_loop_is_a_loop(caller, fund, organization):
    fund(organization, 500_000)
    sandbox_account()
    outcome = task_submit_video(
        caller=caller, prompt="waves --end loop", images=[png_data_url()], batch_size=1
    )
    assert outcome.task.params["loop"] is True and "end_frame" not in outcome.task.params


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resolution": "1080p"}, "resolution"),
        ({"resolution": "720p", "mode": "RELAX"}, "resolution"),
        ({"loop": True, "end_image": png_data_url()}, "end_image"),
        ({"prompt": "waves --loop --end https://example.com/end.png"}, "end_image"),
        ({"end_image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "end_image"),
        ({"end_image": "http://127.0.0.1/end.png"}, "end_image"),
    ],
)
def test_bad_hd_or_end_frame_input_is_refused_and_nothing_moves(
    caller, fund, organization, kwargs, field
):
    fund(organization, 500_000)
    arguments = {"images": [png_data_url()], **kwargs}
    with pytest.raises(ValidationFailed) as caught:
        task_submit_video(caller=caller, **arguments)
    assert getattr(caught.value, "field", None) == field, caught.value.message
    assert not Task.objects.exists()
    assert not LedgerEntry.objects.filter(kind=EntryKind.HOLD).exists()
    assert balance_get(organization=organization).available == 500_000


def test_an_extension_keeps_its_videos_resolution(caller, fund, organization):
    fund(organization, 2_000_000)
    sandbox_account()
    first = run_to_completion(
        task_submit_video(
            caller=caller, images=[png_data_url(size=(96, 54))], batch_size=1, resolution="hd"
        ).task.pk
    )
    with pytest.raises(ValidationFailed) as caught:
        task_submit_video(
            caller=caller, parent_id=first.pk, extend=True, index=1, resolution="480p"
        )
    assert caught.value.field == "resolution"
    extended = task_submit_video(caller=caller, parent_id=first.pk, extend=True, index=1)
    assert extended.task.params["resolution"] == "720p"
    assert Task.objects.count() == 2


def test_the_hd_price_key_is_its_own_row():
    rows = dict(Price.objects.filter(action=VIDEO_HD).values_list("mode", "tokens"))
    assert rows == {"FAST": HD_FAST, "TURBO": 716_800}
