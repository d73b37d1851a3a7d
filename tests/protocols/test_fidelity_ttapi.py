"""Drop-in fidelity of the TTAPI dialect (issue 14), with the bodies TTAPI documents and its
clients send (``{"jobId", "action": "upsample1", "timeout": 300, "hookUrl": ""}``)."""

from __future__ import annotations

import pytest

from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

BASE = "/midjourney/v1"


def imagine(client, prompt: str = "a red fox", **extra) -> str:
    body = {"prompt": prompt, "mode": "fast", "hookUrl": "", "timeout": 300, **extra}
    answer = client.post(f"{BASE}/imagine", body, format="json")
    assert answer.status_code == 200, answer.json()
    job_id = answer.json()["data"]["jobId"]
    run_to_completion(job_id)
    return job_id


def action(client, job_id: str, name: str, **extra):
    body = {"jobId": job_id, "action": name, "timeout": 300, "hookUrl": "", **extra}
    return client.post(f"{BASE}/action", body, format="json")


def components(client, job_id: str) -> list[str]:
    return client.get(f"{BASE}/fetch", {"jobId": job_id}).json()["data"]["components"]


def test_documented_action_names_are_reported_and_accepted(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    grid = imagine(client)
    assert components(client, grid) == [
        "upsample1", "upsample2", "upsample3", "upsample4", "reroll",
        "variation1", "variation2", "variation3", "variation4",
    ]  # fmt: skip
    for name, expected in [
        ("reroll0", Action.REROLL),
        ("upsample1", Action.UPSCALE),
        ("variation4", Action.VARIATION),
    ]:
        answer = action(client, grid, name)
        assert answer.status_code == 200, (name, answer.json())
        assert answer.json()["status"] == "SUCCESS"
        task = run_to_completion(answer.json()["data"]["jobId"])
        assert (task.action, task.status) == (expected, Status.SUCCESS)
    upscale = Task.objects.get(parent_id=grid, action=Action.UPSCALE).pk
    names = components(client, upscale)
    for name in ("high_variation", "low_variation", "zoom_out_2", "zoom_out_1.5", "pan_left"):
        assert name in names
    for name, expected in [
        ("high_variation", Action.VARIATION),
        ("low_variation", Action.VARIATION),
        ("zoom_out_2", Action.ZOOM),
        ("zoom_out_1.5", Action.ZOOM),
        ("pan_up", Action.PAN),
        ("upscale_subtle", Action.UPSCALE),
        ("upscale_creative", Action.UPSCALE),
        ("reroll0", Action.REROLL),
    ]:
        answer = action(client, upscale, name)
        assert answer.status_code == 200, (name, answer.json())
        assert run_to_completion(answer.json()["data"]["jobId"]).action == expected


def test_refusals_list_ttapi_names_and_change_nothing(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    grid = imagine(client)
    before = snapshot(funded)
    unknown = action(client, grid, "U1x")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "status": "FAILED",
        "message": "Button 'U1x' is not available on this task; it offers upsample1, upsample2, "
        "upsample3, upsample4, reroll, variation1, variation2, variation3, variation4.",
        "data": None,
    }
    mask = client.post(f"{BASE}/inpaint", {"jobId": grid, "prompt": "x"}, format="json")
    assert (mask.status_code, mask.json()["message"]) == (400, "mask: This field is required.")
    assert "maskBase64" not in mask.json()["message"]
    on_a_grid = client.post(
        f"{BASE}/inpaint", {"jobId": grid, "mask": png_data_url((255, 255, 255))}, format="json"
    )
    assert on_a_grid.status_code == 400
    assert on_a_grid.json()["message"] == (
        "Button 'inpaint' is not available on this task; it offers upsample1, upsample2, "
        "upsample3, upsample4, reroll, variation1, variation2, variation3, variation4."
    )
    missing = client.post(f"{BASE}/action", {"jobId": grid}, format="json")
    assert missing.json()["message"] == "action: This field is required."
    assert snapshot(funded) == before


def test_a_prompt_or_mask_on_a_button_that_takes_none_is_refused(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    grid = imagine(client)
    before = snapshot(funded)
    refused = action(client, grid, "upsample1", prompt="a blue fox instead")
    assert refused.status_code == 400
    assert refused.json()["status"] == "FAILED"
    assert refused.json()["message"].startswith(
        "This button takes no prompt: only variations, rerolls and pans (remix)"
    )
    masked = action(client, grid, "upsample1", mask=png_data_url())
    assert masked.status_code == 400
    assert masked.json()["message"] == "This button takes no mask; only Vary (Region) does."
    assert snapshot(funded) == before


@pytest.mark.parametrize(("field", "value"), [("mode", "relax"), ("model", "turbo")])
def test_an_action_in_another_mode_than_its_parent_is_refused(
    funded, live_key, client_for, sandbox, field, value
):
    client = client_for(live_key)
    grid = imagine(client)  # FAST
    before = snapshot(funded)
    refused = action(client, grid, "upsample1", **{field: value})
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        f"Follow-ups run in the parent's mode (FAST); {value} was requested."
    )
    assert snapshot(funded) == before
    same = action(client, grid, "upsample1", mode="fast")
    assert same.status_code == 200
    assert Task.objects.get(pk=same.json()["data"]["jobId"]).mode == Mode.FAST


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"{BASE}/nothing"),
        ("post", f"{BASE}/prompt-check"),
        ("post", "/midjourney/v2/imagine"),
        ("get", f"{BASE}/imagine/"),
        ("get", "/midjourney/"),
    ],
)
def test_unknown_ttapi_paths_answer_the_ttapi_envelope(live_key, client_for, method, path):
    response = getattr(client_for(live_key), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "message", "data"}
    assert (body["status"], body["data"]) == ("FAILED", None)
    assert path in body["message"]


def test_wrong_method_on_a_ttapi_path_is_its_envelope(live_key, client_for):
    response = client_for(live_key).get(f"{BASE}/imagine")
    assert response.status_code == 405
    assert response.json()["status"] == "FAILED"


def test_a_two_step_button_without_its_mask_names_ttapis_field(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    grid = imagine(client)
    upscale = run_to_completion(action(client, grid, "upsample2").json()["data"]["jobId"]).pk
    before = snapshot(funded)
    for answer in (
        action(client, upscale, "inpaint", prompt="a hat"),
        client.post(f"{BASE}/inpaint", {"jobId": upscale, "mask": ""}, format="json"),
    ):
        assert answer.status_code == 400
        message = answer.json()["message"]
        assert "mask" in message and "maskBase64" not in message, message
    assert snapshot(funded) == before
    done = action(client, upscale, "inpaint", mask=png_data_url((255, 255, 255)), prompt="a hat")
    assert done.status_code == 200, done.json()
