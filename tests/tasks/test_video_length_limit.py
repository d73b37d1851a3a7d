"""A clip is extended 4 s at a time up to Midjourney's 21 s (docs/api.md, Video): a video
offers Extend only while another extension fits, and an extension past the limit is refused
at submit — by our route and by a press of an Extend button a video kept from before — with
a validation error and nothing held."""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.enums import Status
from apps.tasks.errors import InputError
from apps.tasks.models import Task
from apps.tasks.services.press import task_press
from apps.tasks.services.video import task_submit_video

from .helpers import png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db

# A wide strip: the sandbox's 480-px clips of it are small, so the chain renders quickly.
STRIP = (96, 16)


def _extends(task: Task) -> list[str]:
    return [b["custom_id"] for b in task.buttons if "_extend::" in b["custom_id"]]


def _state(organization) -> tuple[int, int, int]:
    balance = balance_get(organization=organization)
    return balance.available, balance.held, Task.objects.count()


@pytest.fixture
def chain(caller, fund, organization) -> list[Task]:
    """A video and its extensions of one clip each: 5, 9, 13, 17 and 21 seconds."""
    fund(organization, 50_000_000)
    sandbox_account()
    video = run_to_completion(
        task_submit_video(caller=caller, images=[png_data_url(size=STRIP)], batch_size=1).task.pk
    )
    made = [video]
    for _ in range(4):
        assert video.status == Status.SUCCESS, video.fail_reason
        video = run_to_completion(
            task_submit_video(
                caller=caller, parent_id=video.pk, extend=True, index=1, batch_size=1
            ).task.pk
        )
        made.append(video)
    assert video.status == Status.SUCCESS, video.fail_reason
    return made


def test_a_video_offers_extend_only_while_another_extension_fits(chain):
    assert [task.params["seconds"] for task in chain] == [5, 9, 13, 17, 21]
    assert chain[-1].properties["videoDuration"] == 21.0
    # 17 s + 4 s is 21 s: still offered, one button per motion for its one clip.
    assert len(_extends(chain[-2])) == 2
    assert _extends(chain[-1]) == []


def test_extending_a_video_at_the_limit_is_refused_before_anything_is_held(
    caller, organization, chain
):
    longest = chain[-1]
    before = _state(organization)

    with pytest.raises(InputError) as refused:
        task_submit_video(caller=caller, parent_id=longest.pk, extend=True, index=1)

    assert refused.value.field == "parent"
    assert "up to 21 seconds" in refused.value.message
    assert refused.value.details["video_seconds"] == 21
    assert _state(organization) == before


def test_an_extend_button_kept_from_before_is_refused_at_the_press(caller, organization, chain):
    """A video finished before lengths were recorded still carries Extend buttons (and no
    recorded length): the press counts the chain and refuses before anything is held."""
    longest = chain[-1]
    # The Extend buttons a 21 s video finished before this release was given.
    kept = list(chain[-2].buttons)
    for task in chain:
        params = {k: v for k, v in task.params.items() if k != "seconds"}
        Task.objects.filter(pk=task.pk).update(params=params)
    Task.objects.filter(pk=longest.pk).update(buttons=kept)
    before = _state(organization)

    with pytest.raises(InputError) as refused:
        task_press(caller=caller, parent_id=longest.pk, custom_id=kept[0]["custom_id"])

    assert refused.value.field == "button"
    assert "up to 21 seconds" in refused.value.message
    assert _state(organization) == before
