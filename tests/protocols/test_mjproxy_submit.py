"""midjourney-proxy submit endpoints: the envelope and every code (SPEC §6.1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey
from apps.api_keys.services import api_key_revoke
from apps.billing.selectors import balance_get
from apps.protocols.common import TIER_LIMIT_RETRY_AFTER
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import BannedWord, Protocol, Task
from apps.tasks.scheduling import dispatch_pending
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

IMAGINE = "/mj/submit/imagine"
ENVELOPE_KEYS = {"code", "description", "result", "properties"}


def _button(task: Task, label: str) -> str:
    return next(b["custom_id"] for b in task.buttons if b["label"] == label)


# --- code 1 / 22 / 21 ------------------------------------------------------------------------


def test_imagine_started_is_code_1(funded, live_key, client_for, sandbox):
    response = client_for(live_key).post(
        IMAGINE,
        {"prompt": "a red fox", "state": "my-state", "notifyHook": "https://hooks.example/x"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    task = Task.objects.get(pk=body["result"])
    assert body == {
        "code": 1,
        "description": "Submit success",
        "result": task.pk,
        "properties": {},
    }
    assert task.organization == funded
    assert task.protocol == Protocol.MJPROXY
    assert task.action == Action.IMAGINE
    assert task.state == "my-state"
    assert task.notify_hook == "https://hooks.example/x"
    # Code 1: a slot is free for it. The dispatch message starts it on a worker.
    assert task.status == Status.NOT_START
    dispatch_pending()
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED
    assert balance_get(organization=funded).held == 14000


def test_imagine_without_free_account_is_queued_code_22(funded, live_key, client_for):
    client = client_for(live_key)
    first = client.post(IMAGINE, {"prompt": "one"}, format="json").json()
    second = client.post(IMAGINE, {"prompt": "two"}, format="json").json()
    assert first == {
        "code": 22,
        "description": "In queue, there are 0 tasks ahead",
        "result": first["result"],
        "properties": {"numberOfQueues": 0},
    }
    assert second["code"] == 22
    assert second["properties"] == {"numberOfQueues": 1}
    assert second["description"] == "In queue, there are 1 tasks ahead"
    assert Task.objects.get(pk=second["result"]).status == Status.NOT_START


def test_vary_region_is_modal_code_21_then_modal_submit(
    funded, live_key, client_for, finished_imagine
):
    client = client_for(live_key)
    grid = finished_imagine()
    upscale = client.post(
        "/mj/submit/action",
        {"taskId": grid.pk, "customId": _button(grid, "U1")},
        format="json",
    ).json()
    assert upscale["code"] == 1
    upscaled = run_to_completion(upscale["result"])
    before = snapshot(funded)

    modal = client.post(
        "/mj/submit/action",
        {"taskId": upscaled.pk, "customId": _button(upscaled, "Vary (Region)"), "state": "s"},
        format="json",
    )
    body = modal.json()
    assert modal.status_code == 200
    assert set(body) == ENVELOPE_KEYS
    assert body["code"] == 21
    assert body["description"] == "Waiting for window confirm"
    waiting = Task.objects.get(pk=body["result"])
    assert waiting.status == Status.MODAL
    assert body["properties"] == {"finalPrompt": waiting.prompt_en, "remix": True}
    # MODAL tasks hold nothing until they are queued.
    assert snapshot(funded)[:2] == before[:2]

    missing_mask = client.post("/mj/submit/modal", {"taskId": waiting.pk}, format="json").json()
    assert missing_mask["code"] == 4
    assert missing_mask["result"] is None
    assert "maskBase64" in missing_mask["description"]

    done = client.post(
        "/mj/submit/modal",
        {"taskId": waiting.pk, "prompt": "a blue fox", "maskBase64": png_data_url((255, 255, 255))},
        format="json",
    ).json()
    assert done == {
        "code": 1,
        "description": "Submit success",
        "result": waiting.pk,
        "properties": {},
    }
    waiting.refresh_from_db()
    assert waiting.action == Action.VARIATION
    assert waiting.params["mask"].startswith("inputs/")
    assert balance_get(organization=funded).held == 14000
    assert run_to_completion(waiting.pk).status == Status.SUCCESS


def test_modal_of_unknown_or_foreign_task_is_code_3(
    live_key, outsider_key, client_for, other_organization
):
    foreign = Task.objects.create(
        organization=other_organization, action=Action.VARIATION, status=Status.MODAL
    )
    client = client_for(live_key)
    unknown = client.post("/mj/submit/modal", {"taskId": "123"}, format="json")
    other = client.post("/mj/submit/modal", {"taskId": foreign.pk}, format="json")
    assert unknown.status_code == other.status_code == 200
    assert (
        unknown.json()
        == other.json()
        == {
            "code": 3,
            "description": "Task not found.",
            "result": None,
            "properties": {},
        }
    )
    foreign.refresh_from_db()
    assert foreign.status == Status.MODAL


# --- refusals: 23 / 24 / 4 / 3 / 9 -----------------------------------------------------------


def test_tier_limit_is_code_23_and_changes_nothing(funded, live_key, client_for):
    client = client_for(live_key)
    for n in range(3):  # FREE allows 3 unfinished tasks; no account, so they stay queued
        assert client.post(IMAGINE, {"prompt": f"cat {n}"}, format="json").json()["code"] == 22
    before = snapshot(funded)
    body = client.post(IMAGINE, {"prompt": "one too many"}, format="json").json()
    assert body["code"] == 23
    assert body["result"] is None
    assert body["properties"] == {"retryAfter": TIER_LIMIT_RETRY_AFTER}
    assert "3 unfinished tasks" in body["description"]
    assert snapshot(funded) == before


def test_banned_word_is_code_24_with_the_word(funded, live_key, client_for, sandbox):
    BannedWord.objects.create(word="Gore")
    before = snapshot(funded)
    body = client_for(live_key).post(IMAGINE, {"prompt": "lots of GORE here"}, format="json").json()
    assert body == {
        "code": 24,
        "description": "The prompt contains the banned word 'gore'.",
        "result": None,
        "properties": {"bannedWord": "gore"},
    }
    assert snapshot(funded) == before


def test_validation_error_is_code_4(funded, live_key, client_for, sandbox):
    before = snapshot(funded)
    body = (
        client_for(live_key)
        .post("/mj/submit/blend", {"base64Array": [png_data_url()]}, format="json")
        .json()
    )
    assert body == {
        "code": 4,
        "description": "base64Array must contain between 2 and 5 images; got 1.",
        "result": None,
        "properties": {},
    }
    assert snapshot(funded) == before


def test_wrong_field_type_is_code_4(live_key, client_for):
    body = client_for(live_key).post(IMAGINE, {"prompt": ["not", "a", "string"]}, format="json")
    assert body.status_code == 200
    assert body.json() == {
        "code": 4,
        "description": "prompt: Must be a string.",
        "result": None,
        "properties": {},
    }


def test_insufficient_balance_is_code_4(organization, live_key, client_for, sandbox):
    before = snapshot(organization)
    body = client_for(live_key).post(IMAGINE, {"prompt": "a fox"}, format="json").json()
    assert body == {
        "code": 4,
        "description": "Insufficient balance: 14000 tokens needed, 0 available.",
        "result": None,
        "properties": {},
    }
    assert snapshot(organization) == before


def test_follow_up_in_another_mode_is_code_4(funded, live_key, client_for, finished_imagine):
    grid = finished_imagine()
    before = snapshot(funded)
    body = (
        client_for(live_key)
        .post(
            "/mj-relax/mj/submit/action",
            {"taskId": grid.pk, "customId": _button(grid, "U2")},
            format="json",
        )
        .json()
    )
    assert body["code"] == 4
    assert body["description"] == "Follow-ups run in the parent's mode (FAST); RELAX was requested."
    assert snapshot(funded) == before


def test_action_on_unknown_or_foreign_parent_is_code_3(
    funded, live_key, outsider_key, client_for, sandbox, other_organization, fund
):
    fund(other_organization, 100_000)
    foreign = client_for(outsider_key).post(IMAGINE, {"prompt": "theirs"}, format="json").json()
    foreign_task = run_to_completion(foreign["result"])
    before = snapshot(funded), snapshot(other_organization)
    client = client_for(live_key)
    custom_id = _button(foreign_task, "U1")
    answers = [
        client.post("/mj/submit/action", {"taskId": task_id, "customId": custom_id}, format="json")
        for task_id in (foreign_task.pk, "1700000000000000000")
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert (
        answers[0].json()
        == answers[1].json()
        == {
            "code": 3,
            "description": "The parent task does not exist.",
            "result": None,
            "properties": {},
        }
    )
    assert (snapshot(funded), snapshot(other_organization)) == before


def test_unexpected_error_is_code_9(live_key, client_for, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("apps.protocols.mjproxy.views.task_submit", boom)
    response = client_for(live_key).post(IMAGINE, {"prompt": "x"}, format="json")
    assert response.status_code == 500
    assert response.json() == {
        "code": 9,
        "description": "Internal error; the request was not completed.",
        "result": None,
        "properties": {},
    }


# --- authentication and permissions ------------------------------------------------------------


def test_missing_key_is_401_in_proxy_shape():
    response = APIClient().post(IMAGINE, {"prompt": "x"}, format="json")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 4
    assert body["result"] is None
    assert body["properties"] == {}
    assert "mj-api-secret" in body["description"]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("wrong", "The API key is not valid."),
        ("revoked", "The API key has been revoked."),
        ("expired", "The API key has expired."),
    ],
)
def test_bad_key_is_401_in_proxy_shape(live_key, client_for, spoil, message):
    client = client_for(live_key)
    if spoil == "wrong":
        client.credentials(HTTP_MJ_API_SECRET=live_key.plaintext[:-4] + "AAAA")
    elif spoil == "revoked":
        api_key_revoke(api_key=live_key.api_key)
    else:
        ApiKey.objects.filter(pk=live_key.api_key.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    response = client.get("/mj/task/list")
    assert response.status_code == 401
    assert response.json() == {"code": 4, "description": message, "result": None, "properties": {}}


def test_key_without_midjourney_flag_is_403_exactly(organization, make_key, client_for):
    issued = make_key(organization, can_midjourney=False)
    for method, path in (("post", IMAGINE), ("get", "/mj/task/1/fetch"), ("get", "/mj/task/list")):
        response = getattr(client_for(issued), method)(path, {"prompt": "x"}, format="json")
        assert response.status_code == 403
        assert response.json() == {
            "code": 4,
            "description": "API key lacks the midjourney permission",
            "result": None,
            "properties": {},
        }
    assert Task.objects.count() == 0


def test_read_only_key_cannot_submit_but_can_read(funded, make_key, client_for, finished_imagine):
    grid = finished_imagine()
    read_only = client_for(make_key(funded, read_only=True))
    before = snapshot(funded)
    response = read_only.post(IMAGINE, {"prompt": "x"}, format="json")
    assert response.status_code == 403
    assert response.json() == {
        "code": 4,
        "description": "This API key is read-only and cannot submit or change anything.",
        "result": None,
        "properties": {},
    }
    cancel = read_only.post(f"/mj/task/{grid.pk}/cancel")
    assert cancel.status_code == 403
    assert snapshot(funded) == before
    assert read_only.get(f"/mj/task/{grid.pk}/fetch").status_code == 200
    listed = read_only.post("/mj/task/list-by-condition", {"ids": [grid.pk]}, format="json")
    assert [t["id"] for t in listed.json()] == [grid.pk]


# --- modes, bodies, other submit endpoints ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "mode", "price"),
    [
        ("/mj-relax/mj/submit/imagine", {"prompt": "a cat"}, Mode.RELAX, 7000),
        ("/mj-turbo/mj/submit/imagine", {"prompt": "a cat"}, Mode.TURBO, 28000),
        ("/mj-fast/mj/submit/imagine", {"prompt": "a cat --relax"}, Mode.FAST, 14000),
        ("/mj-relax/mj/submit/imagine", {"prompt": "a cat", "mode": "TURBO"}, Mode.TURBO, 28000),
        ("/mj/submit/imagine", {"prompt": "a cat --turbo"}, Mode.TURBO, 28000),
        (
            "/mj/submit/imagine",
            {"prompt": "a cat", "accountFilter": {"modes": ["RELAX"]}},
            Mode.RELAX,
            7000,
        ),
    ],
)
def test_mode_from_prefix_field_and_flag(
    funded, live_key, client_for, sandbox, path, body, mode, price
):
    answer = client_for(live_key).post(path, body, format="json").json()
    assert answer["code"] == 1
    task = Task.objects.get(pk=answer["result"])
    assert (task.mode, task.price) == (mode, price)
    assert balance_get(organization=funded).held == price


def test_niji_bot_adds_the_niji_flag(funded, live_key, client_for, sandbox):
    answer = (
        client_for(live_key)
        .post(IMAGINE, {"prompt": "a cat", "botType": "NIJI_JOURNEY"}, format="json")
        .json()
    )
    task = Task.objects.get(pk=answer["result"])
    assert task.prompt == "a cat --niji"


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", None])
def test_json_body_with_other_or_no_content_type(funded, live_key, sandbox, content_type):
    kwargs = {"content_type": content_type} if content_type else {"content_type": ""}
    response = Client().post(
        IMAGINE, '{"prompt": "a lenient fox"}', HTTP_MJ_API_SECRET=live_key.plaintext, **kwargs
    )
    assert response.status_code == 200
    assert response.json()["code"] == 1
    assert Task.objects.get(pk=response.json()["result"]).prompt == "a lenient fox"


def test_invalid_json_is_code_4(live_key):
    response = Client().post(
        IMAGINE, "{not json", content_type="application/json", HTTP_MJ_API_SECRET=live_key.plaintext
    )
    assert response.status_code == 200
    assert response.json()["code"] == 4


@pytest.mark.parametrize(
    ("path", "body", "action"),
    [
        ("/mj/submit/describe", {"base64": "IMG"}, Action.DESCRIBE),
        (
            "/mj/submit/blend",
            {"base64Array": ["IMG", "IMG2"], "dimensions": "PORTRAIT"},
            Action.BLEND,
        ),
        ("/mj/submit/shorten", {"prompt": "a very long prompt about a cat"}, Action.SHORTEN),
        (
            "/mj/insight-face/swap",
            {"sourceBase64": "IMG", "targetBase64": "IMG2"},
            Action.SWAP_FACE,
        ),
    ],
)
def test_other_submit_endpoints(funded, live_key, client_for, sandbox, path, body, action):
    images = {"IMG": png_data_url((10, 20, 30)), "IMG2": png_data_url((200, 100, 0))}
    payload = {
        k: (images.get(v, v) if isinstance(v, str) else [images[i] for i in v])
        for k, v in body.items()
    }
    payload["state"] = "s-1"
    answer = client_for(live_key).post(path, payload, format="json").json()
    assert answer["code"] == 1, answer
    task = run_to_completion(answer["result"])
    assert (task.action, task.status, task.state) == (action, Status.SUCCESS, "s-1")
    if action == Action.BLEND:
        assert task.params["dimensions"] == "PORTRAIT"


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"action": "UPSCALE", "index": 2}, "U2"),
        ({"action": "VARIATION", "index": "3"}, "V3"),
        ({"action": "REROLL"}, ""),
    ],
)
def test_legacy_change_presses_the_parent_button(
    funded, live_key, client_for, finished_imagine, body, label
):
    grid = finished_imagine()
    answer = (
        client_for(live_key)
        .post("/mj/submit/change", {"taskId": grid.pk, **body}, format="json")
        .json()
    )
    assert answer["code"] == 1
    task = Task.objects.get(pk=answer["result"])
    expected = (
        _button(grid, label)
        if label
        else next(b["custom_id"] for b in grid.buttons if "reroll" in b["custom_id"])
    )
    assert task.custom_id == expected
    assert task.parent_id == grid.pk


@pytest.mark.parametrize(("word", "label"), [("U1", "U1"), ("v4", "V4"), ("R", None)])
def test_simple_change(funded, live_key, client_for, finished_imagine, word, label):
    grid = finished_imagine()
    answer = (
        client_for(live_key)
        .post("/mj/submit/simple-change", {"content": f"{grid.pk} {word}"}, format="json")
        .json()
    )
    assert answer["code"] == 1
    task = Task.objects.get(pk=answer["result"])
    if label:
        assert task.custom_id == _button(grid, label)
    else:
        assert task.custom_id.startswith("MJ::JOB::reroll::0::")


def test_legacy_change_errors(funded, live_key, client_for, finished_imagine):
    grid = finished_imagine()
    client = client_for(live_key)
    before = snapshot(funded)
    bad_index = client.post(
        "/mj/submit/change", {"taskId": grid.pk, "action": "UPSCALE", "index": 5}, format="json"
    ).json()
    assert bad_index == {
        "code": 4,
        "description": "index: Must be 1, 2, 3 or 4.",
        "result": None,
        "properties": {},
    }
    bad_content = client.post(
        "/mj/submit/simple-change", {"content": f"{grid.pk} X9"}, format="json"
    ).json()
    assert bad_content["code"] == 4
    unknown = client.post("/mj/submit/simple-change", {"content": "999 U1"}, format="json").json()
    assert unknown["code"] == 3
    assert snapshot(funded) == before


@pytest.mark.parametrize(
    "path", ["/mj-turbo/mj/submit/action", "/mj/task/list-by-condition", "/midjourney/v1/imagine"]
)
def test_cors_preflight(path):
    response = Client().options(
        path,
        HTTP_ORIGIN="https://chat.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, mj-api-secret, authorization",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "mj-api-secret", "authorization"} <= allowed


def test_imagine_takes_the_deprecated_single_base64(funded, live_key, client_for, sandbox):
    """The proxy's first API (still sent by chat web UIs) gave one reference image as base64."""
    answer = (
        client_for(live_key)
        .post(IMAGINE, {"prompt": "a fox", "base64": png_data_url((1, 2, 3))}, format="json")
        .json()
    )
    assert answer["code"] == 1, answer
    assert len(Task.objects.get(pk=answer["result"]).inputs) == 1
    # base64Array wins when both are sent.
    both = (
        client_for(live_key)
        .post(
            IMAGINE,
            {
                "prompt": "a fox",
                "base64": "not an image",
                "base64Array": [png_data_url((1, 2, 3)), png_data_url((4, 5, 6))],
            },
            format="json",
        )
        .json()
    )
    assert both["code"] == 1, both
    assert len(Task.objects.get(pk=both["result"]).inputs) == 2


def test_real_client_bodies_with_extra_fields_are_accepted(
    funded, live_key, client_for, finished_imagine
):
    """Bodies as popular clients send them: empty hooks, filters, flags we do not know."""
    client = client_for(live_key)
    imagine = client.post(
        IMAGINE,
        {
            "prompt": "a cat --ar 1:1",
            "base64Array": [],
            "instanceId": "",
            "modes": [],
            "notifyHook": "",
            "remix": True,
            "state": "",
            "botType": "MID_JOURNEY",
            "accountFilter": {"channelId": "", "instanceId": "", "modes": [], "remark": ""},
            "seed": 42,
        },
        format="json",
    ).json()
    assert imagine["code"] in (1, 22), imagine
    task = Task.objects.get(pk=imagine["result"])
    assert (task.state, task.notify_hook, task.mode) == ("", "", Mode.FAST)
    grid = finished_imagine()
    action = client.post(
        "/mj/submit/action",
        {
            "chooseSameChannel": True,
            "customId": _button(grid, "U2"),
            "taskId": grid.pk,
            "notifyHook": "",
            "state": "",
        },
        format="json",
    ).json()
    assert action["code"] in (1, 22), action
