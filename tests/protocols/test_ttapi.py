"""TTAPI compatible endpoints (SPEC §6.2)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import BannedWord, Protocol, Task
from apps.tasks.scheduling import dispatch_pending
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

BASE = "/midjourney/v1"
DATA_KEYS = {
    "jobId",
    "action",
    "status",
    "progress",
    "prompt",
    "finalPrompt",
    "description",
    "cdnImage",
    "discordImage",
    "images",
    "videoUrls",
    "components",
    "seed",
    "quota",
    "mode",
    "hookUrl",
    "isTest",
    "failReason",
    "errorCode",
    "submitTime",
    "startTime",
    "finishTime",
}


def _imagine(client, **body):
    response = client.post(f"{BASE}/imagine", {"prompt": "a red fox", **body}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["data"]["jobId"]


def test_imagine_fetch_get_and_post_then_upsample(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    submitted = client.post(
        f"{BASE}/imagine",
        {
            "prompt": "a red fox",
            "mode": "relax",
            "hookUrl": "https://hook.example/t",
            "getUImages": True,
        },
        format="json",
    )
    assert submitted.status_code == 200
    job_id = submitted.json()["data"]["jobId"]
    assert submitted.json() == {
        "status": "SUCCESS",
        "message": "success",
        "data": {"jobId": job_id, "job_id": job_id},
    }
    task = Task.objects.get(pk=job_id)
    assert (task.protocol, task.mode, task.notify_hook) == (
        Protocol.TTAPI,
        Mode.RELAX,
        "https://hook.example/t",
    )
    waiting = client.get(f"{BASE}/fetch", {"jobId": job_id}).json()
    assert waiting["status"] == "PENDING_QUEUE"  # accepted; no worker has dispatched it yet
    dispatch_pending()
    on_queue = client.get(f"{BASE}/fetch", {"jobId": job_id}).json()
    assert on_queue["status"] == "ON_QUEUE"
    assert (on_queue["data"]["quota"], on_queue["data"]["progress"]) == ("0", "0")
    run_to_completion(job_id)

    by_get = client.get(f"{BASE}/fetch", {"jobId": job_id})
    by_post = client.post(f"{BASE}/fetch", {"jobId": job_id}, format="json")
    assert by_get.status_code == by_post.status_code == 200
    assert by_get.json() == by_post.json()
    body = by_get.json()
    assert set(body) == {"status", "message", "jobId", "data"}
    assert (body["status"], body["message"], body["jobId"]) == ("SUCCESS", "success", job_id)
    data = body["data"]
    assert set(data) == DATA_KEYS
    assert data["status"] == "SUCCESS"
    assert data["progress"] == "100"
    assert data["action"] == "imagine"
    assert data["quota"] == "7000"
    assert data["discordImage"] == data["cdnImage"]
    assert data["mode"] == "relax"
    assert data["seed"] == str(Task.objects.get(pk=job_id).seed)
    assert data["components"] == [
        "upsample1", "upsample2", "upsample3", "upsample4", "reroll",
        "variation1", "variation2", "variation3", "variation4",
    ]  # fmt: skip
    assert len(data["images"]) == 4
    for url in [data["cdnImage"], *data["images"]]:
        assert Client().get(urlsplit(url).path).status_code == 200
    assert isinstance(data["finishTime"], int)

    action = client.post(f"{BASE}/action", {"jobId": job_id, "action": "upsample1"}, format="json")
    assert action.status_code == 200
    upscale_id = action.json()["data"]["jobId"]
    upscale = run_to_completion(upscale_id)
    assert (upscale.action, upscale.parent_id, upscale.mode) == (Action.UPSCALE, job_id, Mode.RELAX)
    fetched = client.get(f"{BASE}/fetch", {"jobId": upscale_id}).json()["data"]
    assert fetched["action"] == "upsample1"
    assert fetched["images"] is None  # getUImages was not asked for on this call
    assert "high_variation" in fetched["components"]
    assert "zoom_out_2" in fetched["components"]
    assert fetched["quota"] == "1750"


def test_imagine_without_get_u_images_has_no_images(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    job_id = _imagine(client)
    run_to_completion(job_id)
    data = client.get(f"{BASE}/fetch", {"jobId": job_id}).json()["data"]
    assert data["images"] is None
    assert data["cdnImage"].startswith("http://testserver/files/results/")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.NOT_START, "PENDING_QUEUE"),
        (Status.MODAL, "PENDING_QUEUE"),
        (Status.SUBMITTED, "ON_QUEUE"),
        (Status.IN_PROGRESS, "ON_QUEUE"),
        (Status.FAILURE, "FAILED"),
        (Status.CANCEL, "FAILED"),
    ],
)
def test_status_names(funded, live_key, client_for, status, expected):
    task = Task.objects.create(
        organization=funded, action=Action.IMAGINE, status=status, fail_reason="", progress=30
    )
    body = client_for(live_key).get(f"{BASE}/fetch", {"jobId": task.pk}).json()
    assert body["status"] == body["data"]["status"] == expected
    assert (body["data"]["progress"], body["data"]["quota"]) == ("30", "0")


def test_action_names_and_inpaint(funded, live_key, client_for, finished_imagine):
    client = client_for(live_key)
    grid = finished_imagine(protocol=Protocol.TTAPI)
    up = client.post(f"{BASE}/action", {"jobId": grid.pk, "action": "upsample2"}, format="json")
    upscaled = run_to_completion(up.json()["data"]["jobId"])
    for name, custom_prefix in (
        ("high_variation", "MJ::JOB::high_variation::1::"),
        ("zoom_out_2x", "MJ::Outpaint::50::1::"),
        ("pan_left", "MJ::JOB::pan_left::1::"),
        ("upscale_subtle", "MJ::JOB::upsample_v6_2x_subtle::1::"),
    ):
        answer = client.post(
            f"{BASE}/action", {"jobId": upscaled.pk, "action": name}, format="json"
        )
        assert answer.status_code == 200, (name, answer.json())
        task = Task.objects.get(pk=answer.json()["data"]["jobId"])
        assert task.custom_id.startswith(custom_prefix)
        Task.objects.filter(pk=task.pk).update(status=Status.CANCEL)  # stay under the tier limit

    before = snapshot(funded)
    no_mask = client.post(f"{BASE}/inpaint", {"jobId": upscaled.pk, "prompt": "x"}, format="json")
    assert no_mask.status_code == 400
    assert no_mask.json() == {
        "status": "FAILED",
        "message": "mask: This field is required.",
        "data": None,
    }
    assert snapshot(funded) == before

    inpaint = client.post(
        f"{BASE}/inpaint",
        {"jobId": upscaled.pk, "prompt": "a hat", "mask": png_data_url((255, 255, 255))},
        format="json",
    )
    assert inpaint.status_code == 200
    task = Task.objects.get(pk=inpaint.json()["data"]["jobId"])
    assert task.status in (Status.SUBMITTED, Status.NOT_START)
    assert task.custom_id.startswith("MJ::Inpaint::1::")
    assert task.prompt == "a hat"
    assert run_to_completion(task.pk).status == Status.SUCCESS


def test_unknown_action_name_is_400(funded, live_key, client_for, finished_imagine):
    grid = finished_imagine()
    before = snapshot(funded)
    answer = client_for(live_key).post(
        f"{BASE}/action", {"jobId": grid.pk, "action": "explode"}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["status"] == "FAILED"
    assert answer.json()["message"].startswith("Button 'explode' is not available on this task")
    assert snapshot(funded) == before


def test_describe_blend_seed(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    describe = client.post(f"{BASE}/describe", {"base64": png_data_url()}, format="json")
    assert Task.objects.get(pk=describe.json()["data"]["jobId"]).action == Action.DESCRIBE
    blend = client.post(
        f"{BASE}/blend",
        {"imgBase64Array": [png_data_url(), png_data_url((0, 0, 255))], "dimensions": "LANDSCAPE"},
        format="json",
    )
    blended = Task.objects.get(pk=blend.json()["data"]["jobId"])
    assert (blended.action, blended.params["dimensions"]) == (Action.BLEND, "LANDSCAPE")
    # The seed is known once the job has started (the sandbox renders with the task's own).
    blended = run_to_completion(blended.pk)
    seed = client.post(f"{BASE}/seed", {"jobId": blended.pk}, format="json").json()
    assert seed == {
        "status": "SUCCESS",
        "message": "success",
        "data": {"jobId": blended.pk, "seed": str(blended.seed)},
    }


def test_errors_in_ttapi_shape(
    organization, live_key, client_for, make_key, other_organization, sandbox
):
    client = client_for(live_key)
    before = snapshot(organization)
    broke = client.post(f"{BASE}/imagine", {"prompt": "a fox"}, format="json")
    assert broke.status_code == 402
    assert broke.json() == {
        "status": "FAILED",
        "message": "Insufficient balance: 14000 tokens needed, 0 available.",
        "data": None,
    }
    BannedWord.objects.create(word="gore")
    banned = client.post(f"{BASE}/imagine", {"prompt": "gore"}, format="json")
    assert banned.status_code == 400
    assert banned.json()["message"] == "The prompt contains the banned word 'gore'."
    assert snapshot(organization) == before

    foreign = Task.objects.create(organization=other_organization, action=Action.IMAGINE)
    answers = [client.get(f"{BASE}/fetch", {"jobId": i}) for i in (foreign.pk, "99")]
    assert [a.status_code for a in answers] == [404, 404]
    assert (
        answers[0].json()
        == answers[1].json()
        == {
            "status": "FAILED",
            "message": "Task not found.",
            "data": None,
        }
    )
    missing = APIClient().post(f"{BASE}/imagine", {"prompt": "x"}, format="json")
    assert missing.status_code == 401
    assert missing.json()["status"] == "FAILED"
    no_flag = APIClient()
    no_flag.credentials(HTTP_TT_API_KEY=make_key(organization, can_midjourney=False).plaintext)
    refused = no_flag.post(f"{BASE}/imagine", {"prompt": "x"}, format="json")
    assert refused.status_code == 403
    assert refused.json() == {
        "status": "FAILED",
        "message": "API key lacks the midjourney permission",
        "data": None,
    }
    assert client.get(f"{BASE}/fetch").status_code == 400


def test_tier_limit_is_429(funded, live_key, client_for):
    client = client_for(live_key)
    for n in range(3):
        _imagine(client, prompt=f"fox {n}")
    before = snapshot(funded)
    refused = client.post(f"{BASE}/imagine", {"prompt": "more"}, format="json")
    assert refused.status_code == 429
    assert refused.json()["status"] == "FAILED"
    assert snapshot(funded) == before
    assert balance_get(organization=funded).held == 3 * 14000


def test_model_names_the_mode_as_in_ttapi_examples(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    relax = Task.objects.get(pk=_imagine(client, model="relax"))
    assert (relax.mode, relax.price) == (Mode.RELAX, 7000)
    assert balance_get(organization=funded).held == 7000
    # "mode" wins; a "model" that is not a mode is ignored.
    turbo = Task.objects.get(pk=_imagine(client, mode="turbo", model="relax"))
    other = Task.objects.get(pk=_imagine(client, model="v6"))
    assert (turbo.mode, other.mode) == (Mode.TURBO, Mode.FAST)
