"""Drop-in fidelity of the midjourney-proxy dialect (issue 14), with the request bodies real
clients send: novicezk/midjourney-proxy and trueai-org/midjourney-proxy web UIs and bots, and
relays such as new-api (which forward the same bodies). Every answer is checked field by field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from apps.billing.selectors import balance_get
from apps.protocols.common import TIER_LIMIT_RETRY_AFTER
from apps.protocols.mjproxy.payloads import task_json
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from tests.factories import TaskFactory
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

#: Every key of the proxy's task JSON and what it may hold (``None`` allowed where listed).
NULLABLE_STR = (str, type(None))
SCHEMA: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "action": (str,),
    "status": (str,),
    "prompt": NULLABLE_STR,
    "promptEn": NULLABLE_STR,
    "description": (str,),
    "state": NULLABLE_STR,
    "submitTime": (int,),
    "startTime": (int, type(None)),
    "finishTime": (int, type(None)),
    "progress": (str,),
    "imageUrl": NULLABLE_STR,
    "imageUrls": (list, type(None)),
    "videoUrl": NULLABLE_STR,
    "videoUrls": (list, type(None)),
    "thumbnailUrl": NULLABLE_STR,
    "failReason": NULLABLE_STR,
    "errorCode": NULLABLE_STR,
    "mode": (str,),
    "properties": (dict,),
    "buttons": (list,),
}

# --- request bodies as the clients send them --------------------------------------------------

#: trueai-org/midjourney-proxy's web UI (and its Python/JS SDKs): ``accountFilter`` and
#: ``botType`` always present, empty hook and state.
TRUEAI_FILTER = {
    "channelId": "",
    "instanceId": "",
    "modes": [],
    "remark": "",
    "remix": True,
    "remixAutoConsidered": True,
}


def trueai_imagine(prompt: str) -> dict[str, Any]:
    return {
        "botType": "MID_JOURNEY",
        "prompt": prompt,
        "base64Array": [],
        "accountFilter": TRUEAI_FILTER,
        "notifyHook": "",
        "state": "",
    }


def trueai_action(task_id: str, custom_id: str) -> dict[str, Any]:
    return {
        "chooseSameChannel": True,
        "customId": custom_id,
        "taskId": task_id,
        "accountFilter": TRUEAI_FILTER,
        "notifyHook": "",
        "state": "",
    }


def novicezk_imagine(prompt: str) -> dict[str, Any]:
    """novicezk/midjourney-proxy's ``SubmitImagineDTO`` as its swagger example sends it;
    new-api relays the same body."""
    return {"base64Array": [], "notifyHook": "", "prompt": prompt, "state": "test:22"}


def check_schema(body: dict[str, Any]) -> None:
    """All keys, with the types clients are written against."""
    assert set(body) == set(SCHEMA), set(body) ^ set(SCHEMA)
    for key, types in SCHEMA.items():
        assert isinstance(body[key], types), (key, body[key])
    assert body["description"], body  # never empty, never null
    properties = body["properties"]
    assert isinstance(properties["finalZhPrompt"], str)
    assert isinstance(properties.get("finalPrompt"), NULLABLE_STR)
    assert isinstance(properties["isTest"], bool)
    if body["imageUrls"] is not None:
        assert body["imageUrls"], "an empty list is not an image list"
        for item in body["imageUrls"]:
            assert set(item) == {"url"} and isinstance(item["url"], str) and item["url"]
    if body["status"] == "SUCCESS" and body["action"] not in ("DESCRIBE", "SHORTEN"):
        assert isinstance(body["imageUrl"], str) and isinstance(body["thumbnailUrl"], str)
        assert body["imageUrls"] and body["imageUrl"]
    for button in body["buttons"]:
        assert isinstance(button["customId"], str)
        assert isinstance(button["label"], str) and isinstance(button["emoji"], str)
        assert isinstance(button["type"], int) and isinstance(button["style"], int)


def downloadable(url: str) -> bytes:
    response = Client().get(urlsplit(url).path)
    assert response.status_code == 200, url
    return b"".join(response.streaming_content)


def submit(client, path: str, body: dict[str, Any]) -> str:
    answer = client.post(path, body, format="json").json()
    assert answer["code"] in (1, 22), answer
    run_to_completion(answer["result"])
    return answer["result"]


def fetch(client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/mj/task/{task_id}/fetch")
    assert response.status_code == 200
    return response.json()


def press(client, parent: dict[str, Any], label: str) -> dict[str, Any]:
    custom_id = next(b["customId"] for b in parent["buttons"] if b["label"] == label)
    return fetch(
        client, submit(client, "/mj/submit/action", trueai_action(parent["id"], custom_id))
    )


def press_id(client, parent: dict[str, Any], part: str) -> dict[str, Any]:
    custom_id = next(b["customId"] for b in parent["buttons"] if part in b["customId"])
    return fetch(
        client, submit(client, "/mj/submit/action", trueai_action(parent["id"], custom_id))
    )


# --- the task JSON ----------------------------------------------------------------------------


def test_every_task_json_has_every_key_with_its_type(funded, live_key, client_for, sandbox):
    """The schema test: every action's result and every status, through fetch and the lists."""
    client = client_for(live_key)
    grid = fetch(client, submit(client, "/mj/submit/imagine", trueai_imagine("a red fox")))
    upscale = press(client, grid, "U1")
    bodies = [
        grid,
        upscale,
        press(client, grid, "V2"),
        press_id(client, grid, "reroll"),
        press(client, upscale, "Zoom Out 2x"),
        press(client, upscale, "Vary (Subtle)"),
        fetch(
            client,
            submit(
                client,
                "/mj/submit/describe",
                {"base64": png_data_url(), "botType": "MID_JOURNEY", "notifyHook": "", "state": ""},
            ),
        ),
        fetch(
            client,
            submit(
                client,
                "/mj/submit/shorten",
                {"prompt": "a very long and winding prompt about a fox", "botType": "MID_JOURNEY"},
            ),
        ),
        fetch(
            client,
            submit(
                client,
                "/mj/submit/blend",
                {
                    "base64Array": [png_data_url(), png_data_url((10, 200, 10))],
                    "dimensions": "SQUARE",
                    "botType": "MID_JOURNEY",
                    "notifyHook": "",
                    "state": "",
                },
            ),
        ),
        fetch(
            client,
            submit(
                client,
                "/mj/insight-face/swap",
                {"sourceBase64": png_data_url(), "targetBase64": png_data_url((9, 9, 200))},
            ),
        ),
    ]
    organization = funded
    others = [
        TaskFactory(organization=organization, queued=True),
        TaskFactory(organization=organization, running=True),
        TaskFactory(organization=organization, modal=True),
        TaskFactory(organization=organization, failed=True),
        TaskFactory(organization=organization, cancelled=True),
        TaskFactory(organization=organization, action=Action.DESCRIBE, prompt="", prompt_en=""),
    ]
    bodies += [fetch(client, t.pk) for t in others]
    actions = {b["action"] for b in bodies}
    assert actions >= {"IMAGINE", "UPSCALE", "VARIATION", "REROLL", "ZOOM", "DESCRIBE", "SHORTEN"}
    assert actions >= {"BLEND", "SWAP_FACE"}
    statuses = {b["status"] for b in bodies}
    assert statuses >= {"SUCCESS", "NOT_START", "IN_PROGRESS", "MODAL", "FAILURE", "CANCEL"}
    for body in bodies:
        check_schema(body)
    # The lists and the per-task hook body are the same JSON.
    listed = client.post(
        "/mj/task/list-by-condition", {"ids": [b["id"] for b in bodies]}, format="json"
    ).json()
    assert listed == bodies
    for body in client.get("/mj/task/list").json():
        check_schema(body)
    for task in Task.objects.filter(organization=organization):
        check_schema(task_json(task))


def test_a_grid_as_web_uis_render_it(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    task_id = submit(client, "/mj/submit/imagine", trueai_imagine("a lighthouse --ar 3:2"))
    body = fetch(client, task_id)
    task = Task.objects.get(pk=task_id)
    assert body["imageUrl"].endswith(f"/{task_id}.png")
    assert [item["url"] for item in body["imageUrls"]] == [
        body["imageUrl"].replace(f"/{task_id}.png", f"/{task_id}-{n}.png") for n in range(1, 5)
    ]
    assert body["thumbnailUrl"].endswith(f"/{task_id}.thumb.webp")
    for url in [body["imageUrl"], body["thumbnailUrl"], *(i["url"] for i in body["imageUrls"])]:
        assert downloadable(url)
    assert body["description"] == "/imagine a lighthouse --ar 3:2"
    assert body["properties"]["finalPrompt"] == task.prompt_en == "a lighthouse --ar 3:2"
    assert body["properties"]["finalZhPrompt"] == ""
    assert body["prompt"] == "a lighthouse --ar 3:2" and body["promptEn"] == task.prompt_en


def test_novicezk_body_and_follow_up_descriptions(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    grid = fetch(client, submit(client, "/mj/submit/imagine", novicezk_imagine("Cat")))
    assert (grid["description"], grid["state"]) == ("/imagine Cat", "test:22")
    upscale = press(client, grid, "U1")
    assert upscale["description"] == f"/up {grid['id']} U1"
    assert upscale["imageUrls"] == [{"url": upscale["imageUrl"]}]
    variation = press(client, grid, "V3")
    assert variation["description"] == f"/up {grid['id']} V3"
    simple = client.post(
        "/mj/submit/simple-change", {"content": f"{grid['id']} R", "state": ""}, format="json"
    ).json()
    run_to_completion(simple["result"])
    assert fetch(client, simple["result"])["description"] == f"/up {grid['id']} R"


def test_describe_and_shorten_prompts_are_in_prompt_and_prompt_en(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    described_id = submit(
        client,
        "/mj/submit/describe",
        {"base64": png_data_url(), "botType": "MID_JOURNEY", "notifyHook": "", "state": ""},
    )
    described = fetch(client, described_id)
    final = described["properties"]["finalPrompt"]
    assert final.startswith("1\ufe0f\u20e3") and "4\ufe0f\u20e3" in final
    assert described["prompt"] == described["promptEn"] == final
    assert described["description"] == f"/describe {described_id}.png"
    assert described["properties"]["finalZhPrompt"] == ""

    shortened = fetch(
        client, submit(client, "/mj/submit/shorten", {"prompt": "a fox in a very long coat"})
    )
    final = shortened["properties"]["finalPrompt"]
    assert final and shortened["prompt"] == shortened["promptEn"] == final
    assert shortened["description"] == "/shorten a fox in a very long coat"


def test_final_zh_prompt_is_kept_when_an_upstream_gave_one(funded, live_key, client_for):
    task = TaskFactory(
        organization=funded, succeeded=True, properties={"finalZhPrompt": "一只狐狸"}
    )
    body = fetch(client_for(live_key), task.pk)
    assert body["properties"]["finalZhPrompt"] == "一只狐狸"
    broken = TaskFactory(organization=funded, properties={"finalZhPrompt": None})
    assert fetch(client_for(live_key), broken.pk)["properties"]["finalZhPrompt"] == ""


# --- refusals -----------------------------------------------------------------------------------


def test_image_seed_without_a_seed_is_a_clear_code_4(funded, live_key, client_for):
    client = client_for(live_key)
    queued = TaskFactory(organization=funded, queued=True, seed=None)
    response = client.get(f"/mj/task/{queued.pk}/image-seed")
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 4 and body["result"] is None
    assert "no seed yet" in body["description"]
    done = TaskFactory(organization=funded, succeeded=True, seed=1234)
    assert client.get(f"/mj/task/{done.pk}/image-seed").json() == {
        "code": 1,
        "description": "Success",
        "result": "1234",
        "properties": {},
    }


def test_tier_limit_says_when_to_retry_in_every_dialect(funded, live_key, client_for):
    client = client_for(live_key)
    for n in range(3):  # FREE: 3 unfinished tasks; no account, so they stay queued
        queued = client.post("/mj/submit/imagine", novicezk_imagine(f"cat {n}"), format="json")
        assert queued.json()["code"] == 22
        # The position itself is computed elsewhere; the key is there and a number.
        assert isinstance(queued.json()["properties"]["numberOfQueues"], int)
    before = snapshot(funded)
    mj = client.post("/mj/submit/imagine", trueai_imagine("one too many"), format="json")
    assert mj.json()["code"] == 23
    assert mj.json()["properties"] == {"retryAfter": TIER_LIMIT_RETRY_AFTER}
    assert mj["Retry-After"] == str(TIER_LIMIT_RETRY_AFTER)
    native = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": "x"}, format="json")
    assert native.status_code == 429
    assert native["Retry-After"] == str(TIER_LIMIT_RETRY_AFTER)
    assert native.json()["error"]["details"]["retry_after"] == TIER_LIMIT_RETRY_AFTER
    ttapi = client.post("/midjourney/v1/imagine", {"prompt": "x"}, format="json")
    assert ttapi.status_code == 429 and ttapi.json()["status"] == "FAILED"
    assert ttapi["Retry-After"] == str(TIER_LIMIT_RETRY_AFTER)
    assert snapshot(funded) == before


def test_enable_remix_false_is_a_plain_request(funded, live_key, client_for, sandbox):
    body = {**trueai_imagine("a fox"), "enableRemix": False}
    assert client_for(live_key).post("/mj/submit/imagine", body, format="json").json()["code"] == 1


def test_modal_on_a_relax_task_through_the_fast_prefix_is_refused(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    grid = fetch(
        client,
        submit(client, "/mj-relax/mj/submit/imagine", trueai_imagine("a red barn")),
    )
    assert grid["mode"] == Mode.RELAX
    upscale = press(client, grid, "U1")
    custom = next(b["customId"] for b in upscale["buttons"] if b["label"] == "Custom Zoom")
    waiting = client.post(
        "/mj-relax/mj/submit/action", trueai_action(upscale["id"], custom), format="json"
    ).json()
    assert waiting["code"] == 21
    before = snapshot(funded)
    modal = {"maskBase64": "", "prompt": "a red barn --zoom 1.5", "taskId": waiting["result"]}
    refused = client.post("/mj-fast/mj/submit/modal", modal, format="json").json()
    assert refused["code"] == 4
    assert refused["description"] == "This task runs in RELAX mode; FAST was requested."
    assert snapshot(funded) == before
    assert Task.objects.get(pk=waiting["result"]).status == Status.MODAL
    accepted = client.post("/mj/submit/modal", modal, format="json").json()
    assert accepted["code"] in (1, 22)


# --- uploads ------------------------------------------------------------------------------------


def test_upload_discord_images_gives_stable_urls_usable_in_prompts(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    before = balance_get(organization=funded)
    images = [png_data_url(), png_data_url((1, 2, 3), size=(32, 48))]
    answer = client.post(
        "/mj/submit/upload-discord-images",
        {"base64Array": images, "filter": {"channelId": "", "instanceId": "", "remark": ""}},
        format="json",
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["code"], body["description"], body["properties"]) == (1, "Success", {})
    urls = body["result"]
    assert len(urls) == 2 and len(set(urls)) == 2
    for url in urls:
        assert url.startswith("http://testserver/files/inputs/")
        assert downloadable(url)[:8] == b"\x89PNG\r\n\x1a\n"
    assert balance_get(organization=funded) == before  # uploading is free
    prompt = f"{urls[0]} a fox in the style --sref {urls[1]} --cref {urls[0]}"
    task_id = submit(client, "/mj/submit/imagine", trueai_imagine(prompt))
    task = Task.objects.get(pk=task_id)
    assert task.status == Status.SUCCESS
    assert task.prompt_en == prompt


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "base64Array: give at least one image to upload."),
        ({"base64Array": [png_data_url()] * 11}, "base64Array: at most 10 images per upload"),
        ({"base64Array": ["not an image"]}, "base64Array[0]"),
        ({"base64Array": "data:image/png;base64,xx"}, "base64Array: Must be a list of strings."),
    ],
)
def test_upload_discord_images_refusals(funded, live_key, client_for, body, message):
    answer = client_for(live_key).post("/mj/submit/upload-discord-images", body, format="json")
    assert answer.status_code == 200
    assert answer.json()["code"] == 4
    assert answer.json()["description"].startswith(message)
