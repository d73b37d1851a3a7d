"""``/mj/submit/video``'s ``index`` counts from 0, as trueai-org's ``SubmitVideoDTO`` does
(``index`` 0-3; its proxy presses ``…_extend::{index + 1}``) and as our mjproxy engine sends it
upstream (``index - 1``): a body our engine sends is read back as the same clip."""

from __future__ import annotations

import pytest

from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.factories import TaskFactory

from .conftest import snapshot

pytestmark = pytest.mark.django_db


def _video(organization, clips: int = 4) -> Task:
    return TaskFactory(
        organization=organization,
        action=Action.VIDEO,
        status=Status.SUCCESS,
        result={"image": "x/poster.png", "videos": [f"x/{n}.mp4" for n in range(1, clips + 1)]},
    )


@pytest.mark.parametrize(("index", "clip"), [(0, 1), ("3", 4)])
def test_extend_reads_index_from_zero(index, clip, funded, live_key, client_for):
    video = _video(funded)
    body = (
        client_for(live_key)
        .post(
            "/mj/submit/video",
            {"action": "extend", "taskId": video.pk, "index": index, "batchSize": 4},
            format="json",
        )
        .json()
    )
    assert body["code"] in (1, 22), body  # started or queued
    assert Task.objects.get(pk=body["result"]).params["index"] == clip


def test_animate_reads_a_grid_image_index_from_zero(funded, live_key, client_for):
    grid = TaskFactory(organization=funded, action=Action.IMAGINE, succeeded=True)
    assert len(grid.result["splits"]) == 4
    body = (
        client_for(live_key)
        .post("/mj/submit/video", {"taskId": grid.pk, "index": 0}, format="json")
        .json()
    )
    assert body["code"] in (1, 22), body  # started or queued
    assert Task.objects.get(pk=body["result"]).params["index"] == 1


@pytest.mark.parametrize(
    ("clips", "index", "description"),
    [
        (4, 4, "index: Must be 0, 1, 2 or 3 (counted from 0)"),
        (4, -1, "index: Must be 0, 1, 2 or 3 (counted from 0)"),
        (4, True, "index: Must be 0, 1, 2 or 3 (counted from 0)"),
        (2, 2, "index: The task has 2 clip(s): index goes from 0 to 1."),
    ],
)
def test_an_index_out_of_range_is_refused_in_the_routes_numbers(
    clips, index, description, funded, live_key, client_for
):
    video = _video(funded, clips)
    before = snapshot(funded)
    body = (
        client_for(live_key)
        .post(
            "/mj/submit/video",
            {"action": "extend", "taskId": video.pk, "index": index},
            format="json",
        )
        .json()
    )
    assert body["code"] == 4, body
    assert body["description"].startswith(description), body
    assert snapshot(funded) == before
