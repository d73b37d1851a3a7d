"""Animate (Manual) end to end through the sandbox in every dialect: Midjourney's two-step
animate — the press waits (MODAL, mj-proxy code 21) for the prompt that guides the motion, then
the video runs, charged the video price; with Remix on the automatic animate button asks the
same. Bad second steps are refused and nothing is charged."""

from __future__ import annotations

import io
from typing import Any

import av
import pytest

from apps.api_keys.models import ApiKey
from apps.tasks import storage
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot
from .test_fidelity_mjproxy import fetch, press, submit, trueai_action, trueai_imagine

pytestmark = pytest.mark.django_db

VIDEO_FAST = 112_000


def upscale_of(client) -> dict[str, Any]:
    grid = fetch(client, submit(client, "/mj/submit/imagine", trueai_imagine("a fox in snow")))
    return press(client, grid, "U1")


def custom_id_of(task: dict[str, Any], label: str) -> str:
    return next(b["customId"] for b in task["buttons"] if b["label"] == label)


def clip_of(task: Task, n: int = 0) -> tuple[str, float]:
    with av.open(io.BytesIO(storage.read_file(task.result["videos"][n]))) as container:
        return container.streams.video[0].codec_context.name, container.duration / 1_000_000


def manual_id(upscale: dict[str, Any], motion: str) -> str:
    """Animate Manually's id: Midjourney's animate form for the upscale's job hash."""
    auto = custom_id_of(upscale, f"Animate ({motion.capitalize()} motion)")
    job_hash = auto.split("::")[4]
    return f"MJ::AnimateModal::{job_hash}::1::{motion}::0"


def test_the_upscale_keeps_discords_buttons_and_animate_manually_is_pressable(
    funded, live_key, client_for, sandbox
):
    upscale = upscale_of(client_for(live_key))
    labels = [b["label"] for b in upscale["buttons"]]
    # Discord's upscale has no "Animate Manually" button: the list stays Midjourney's.
    assert "Animate (High motion)" in labels
    assert not any("Manually" in label for label in labels)
    assert not any("AnimateModal" in b["customId"] for b in upscale["buttons"])


def test_mjproxy_animate_manually_waits_for_the_prompt_then_runs(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    upscale = upscale_of(client)
    before = snapshot(funded)
    manual = manual_id(upscale, "high")
    answer = client.post(
        "/mj/submit/action", trueai_action(upscale["id"], manual), format="json"
    ).json()
    assert answer["code"] == 21, answer
    waiting = Task.objects.get(pk=answer["result"])
    assert (waiting.status, waiting.action) == (Status.MODAL, Action.VIDEO)
    assert waiting.prompt_en == "a fox in snow"  # the image's prompt, to start from
    available, held, count = snapshot(funded)
    assert (available, held) == before[:2] and count == before[2] + 1  # nothing held yet

    confirm = client.post(
        "/mj/submit/modal",
        {"taskId": waiting.pk, "prompt": "the fox leaps into the drift --bs 1"},
        format="json",
    ).json()
    assert confirm["code"] == 1, confirm
    video = run_to_completion(waiting.pk)
    assert video.status == Status.SUCCESS, video.fail_reason
    assert video.prompt_en == "the fox leaps into the drift"
    assert video.params["manual"] is True and video.params["motion"] == "high"
    assert video.params["batch_size"] == 1 and video.price == VIDEO_FAST // 4
    codec, seconds = clip_of(video)
    assert codec == "h264" and 4.5 <= seconds <= 5.5
    body = fetch(client, video.pk)
    assert body["action"] == "VIDEO" and len(body["videoUrls"]) == 1
    assert snapshot(funded)[0] == before[0] - VIDEO_FAST // 4


def test_mjproxy_animate_with_enable_remix_opens_the_same_step(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    upscale = upscale_of(client)
    auto = custom_id_of(upscale, "Animate (Low motion)")
    answer = client.post(
        "/mj/submit/action",
        {**trueai_action(upscale["id"], auto), "enableRemix": True},
        format="json",
    ).json()
    assert answer["code"] == 21, answer
    confirm = client.post(
        "/mj/submit/modal",
        {"taskId": answer["result"], "prompt": "snow falls --bs 2"},
        format="json",
    ).json()
    assert confirm["code"] == 1, confirm
    video = run_to_completion(answer["result"])
    assert video.status == Status.SUCCESS, video.fail_reason
    assert (video.params["motion"], video.params["manual"], video.params["batch_size"]) == (
        "low",
        True,
        2,
    )
    assert len(video.result["videos"]) == 2 and video.price == VIDEO_FAST // 2


def test_ttapi_animate_manual_takes_its_prompt_in_one_call(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    upscale = upscale_of(client)
    answer = client.post(
        "/midjourney/v1/action",
        {
            "jobId": upscale["id"],
            "action": "animate_high_manual",
            "prompt": "wind in the fur --bs 1",
        },
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    video = run_to_completion(answer.json()["data"]["jobId"])
    assert video.status == Status.SUCCESS, video.fail_reason
    assert video.prompt_en == "wind in the fur" and video.params["manual"] is True
    assert clip_of(video)[0] == "h264"
    data = client.get(f"/midjourney/v1/fetch?jobId={upscale['id']}").json()["data"]
    assert "animate_high" in data["components"]
    assert "animate_high_manual" not in data["components"]  # pressable, not a button


def test_native_animate_manual_then_the_modal_step(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    upscale = upscale_of(client)
    waiting = client.post(
        "/api/v1/tasks", {"parent": upscale["id"], "button": "ANIMATE_MANUAL_LOW"}, format="json"
    )
    assert waiting.status_code == 201, waiting.json()
    assert waiting.json()["status"] == Status.MODAL
    done = client.post(
        f"/api/v1/tasks/{waiting.json()['id']}/modal",
        {"prompt": f"the fox turns into a statue --bs 1 --end {png_data_url((10, 10, 10))}"},
        format="json",
    )
    assert done.status_code == 200, done.json()
    video = run_to_completion(waiting.json()["id"])
    assert video.status == Status.SUCCESS, video.fail_reason
    assert video.params["end_frame"] is True and video.params["motion"] == "low"
    assert video.prompt_en == "the fox turns into a statue"


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("--bs 1", "prompt"),  # nothing left to guide the motion
        ("waves --bs 3", "batchSize"),
        ("waves --motion wild", "motion"),
        ("waves --loop --end https://example.com/end.png", "prompt"),
        ("waves --end http://127.0.0.1/end.png", "prompt"),
    ],
)
def test_a_bad_animate_prompt_is_refused_and_nothing_is_charged(
    funded, live_key, client_for, sandbox, prompt, field
):
    client = client_for(live_key)
    upscale = upscale_of(client)
    manual = manual_id(upscale, "high")
    waiting = client.post(
        "/mj/submit/action", trueai_action(upscale["id"], manual), format="json"
    ).json()["result"]
    before = snapshot(funded)
    answer = client.post(
        "/mj/submit/modal", {"taskId": waiting, "prompt": prompt}, format="json"
    ).json()
    assert answer["code"] != 1, answer
    assert field in answer["description"], answer
    assert Task.objects.get(pk=waiting).status == Status.MODAL
    assert snapshot(funded) == before


def test_animate_with_the_keys_remix_default_waits_in_the_native_api(
    funded, live_key, client_for, sandbox
):
    ApiKey.objects.filter(pk=live_key.api_key.pk).update(remix=True)
    client = client_for(live_key)
    upscale = upscale_of(client)
    waiting = client.post(
        "/api/v1/tasks", {"parent": upscale["id"], "button": "ANIMATE_HIGH"}, format="json"
    ).json()
    assert waiting["status"] == Status.MODAL
