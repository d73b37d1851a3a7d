"""An extension keeps its video's resolution (docs/api.md, Video) whichever way it is asked
for: our video route, the video's own Extend button, or that button pressed with remix (the
Animate Manually step). An HD video's extension is priced on VIDEO_HD and made at 720p."""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.enums import Status
from apps.tasks.services.press import ModalInput, task_press
from apps.tasks.services.video import task_submit_video

from .helpers import button_id, png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

HD_FAST = 358_400  # the seeded VIDEO_HD FAST row: a batch of 4 clips
SD_FAST = 112_000


@pytest.fixture
def hd_video(caller, fund, organization):
    fund(organization, 5_000_000)
    sandbox_account()
    video = run_to_completion(
        task_submit_video(
            caller=caller, images=[png_data_url(size=(64, 36))], batch_size=1, resolution="720p"
        ).task.pk
    )
    assert video.status == Status.SUCCESS, video.fail_reason
    return video


def test_the_extend_button_of_an_hd_video_is_priced_and_asked_for_as_hd(
    caller, organization, hd_video
):
    before = balance_get(organization=organization).available
    extend = button_id(hd_video, part="animate_low_extend::1::")

    pressed = task_press(caller=caller, parent_id=hd_video.pk, custom_id=extend).task
    via_route = task_submit_video(caller=caller, parent_id=hd_video.pk, extend=True, index=1).task

    assert pressed.params["resolution"] == via_route.params["resolution"] == "720p"
    # The button makes a batch of four, as the route does by default: one price.
    assert pressed.price == via_route.price == HD_FAST
    assert balance_get(organization=organization).available == before - 2 * HD_FAST


def test_a_remixed_extend_of_an_hd_video_stays_hd_and_is_made_at_720p(
    caller, organization, hd_video
):
    extend = button_id(hd_video, part="animate_high_extend::1::")

    pressed = task_press(
        caller=caller,
        parent_id=hd_video.pk,
        custom_id=extend,
        remix=True,
        modal=ModalInput(prompt="the waves roll in --bs 1"),
    ).task

    assert pressed.params["resolution"] == "720p" and pressed.params["batch_size"] == 1
    assert pressed.price == HD_FAST // 4
    done = run_to_completion(pressed.pk)
    assert done.status == Status.SUCCESS, done.fail_reason
    assert done.properties["videoResolution"] == "720p"
    assert done.price == HD_FAST // 4
