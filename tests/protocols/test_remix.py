"""Remix (issue 17) end to end through the sandbox, in all three dialects.

With remix on, a variation, reroll or pan waits for the (changed) prompt — code 21 and
``/mj/submit/modal`` in mj-proxy, ``remix``/``prompt`` in the native API, ``prompt`` on the
action in TTAPI — then runs with it, charged the action's price; the sandbox paints the new
prompt into the result.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.api_keys.models import ApiKey
from apps.billing.selectors import price_get
from apps.engines.sandbox import render
from apps.engines.sandbox.remix import render_remix
from apps.tasks import storage
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from tests.tasks.helpers import button_id, run_to_completion

from .conftest import snapshot
from .test_fidelity_mjproxy import fetch, submit, trueai_action, trueai_imagine

pytestmark = pytest.mark.django_db


def custom_id_of(parent: dict[str, Any], label: str) -> str:
    return next(b["customId"] for b in parent["buttons"] if b["label"] == label)


# --- mj-proxy ---------------------------------------------------------------------------------


def test_mjproxy_enable_remix_opens_the_remix_step_and_runs_the_changed_prompt(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    grid = fetch(client, submit(client, "/mj/submit/imagine", trueai_imagine("a red barn")))
    before = snapshot(funded)
    body = {**trueai_action(grid["id"], custom_id_of(grid, "V1")), "enableRemix": True}
    answer = client.post("/mj/submit/action", body, format="json").json()
    assert answer["code"] == 21, answer
    assert answer["properties"] == {"finalPrompt": "a red barn", "remix": True}
    waiting = Task.objects.get(pk=answer["result"])
    assert waiting.status == Status.MODAL and waiting.params["remix"] is True
    available, held, count = snapshot(funded)
    assert (available, held) == before[:2] and count == before[2] + 1  # nothing held yet

    confirm = client.post(
        "/mj/submit/modal", {"taskId": waiting.pk, "prompt": "a deep blue ocean"}, format="json"
    ).json()
    assert confirm["code"] == 1, confirm
    remixed = run_to_completion(waiting.pk)
    assert remixed.status == Status.SUCCESS
    assert (remixed.action, remixed.prompt_en) == (Action.VARIATION, "a deep blue ocean")
    assert remixed.price == price_get(action=Action.VARIATION, mode=Mode.FAST) > 0
    assert snapshot(funded)[0] == before[0] - remixed.price
    assert fetch(client, remixed.pk)["promptEn"] == "a deep blue ocean"

    plain = Task.objects.get(
        pk=submit(client, "/mj/submit/action", trueai_action(grid["id"], custom_id_of(grid, "V1")))
    )
    assert plain.prompt_en == "a red barn" and "remix" not in plain.params
    # The sandbox painted the changed prompt into the variation (tests/engines checks that
    # this is visible).
    quadrant = render.split_grid(
        storage.read_file(Task.objects.get(pk=grid["id"]).result["image"])
    )[0]
    varied = render.render_variation(quadrant, remixed.seed, "grid")
    expected = render_remix(varied, "a deep blue ocean", remixed.seed)
    assert storage.read_file(remixed.result["image"]) == expected != varied


def test_mjproxy_enable_remix_on_imagine_holds_for_the_family(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    body = {**trueai_imagine("a red barn"), "enableRemix": True}
    grid = fetch(client, submit(client, "/mj/submit/imagine", body))
    for label in ("V2", "🔄"):
        custom_id = next(
            b["customId"] for b in grid["buttons"] if label in (b["label"], b["emoji"])
        )
        answer = client.post(
            "/mj/submit/action", trueai_action(grid["id"], custom_id), format="json"
        ).json()
        assert answer["code"] == 21, (label, answer)
    # enableRemix: false on the press wins over the family's remix mode.
    off = {**trueai_action(grid["id"], custom_id_of(grid, "V3")), "enableRemix": False}
    assert client.post("/mj/submit/action", off, format="json").json()["code"] == 1
    # An upscale is never remixed.
    upscale = fetch(
        client,
        submit(client, "/mj/submit/action", trueai_action(grid["id"], custom_id_of(grid, "U1"))),
    )
    pan_left = next(b["customId"] for b in upscale["buttons"] if "pan_left" in b["customId"])
    pan = client.post(
        "/mj/submit/action", trueai_action(upscale["id"], pan_left), format="json"
    ).json()
    assert pan["code"] == 21, pan


def test_a_keys_remix_default_opens_the_step_unless_the_request_says_no(
    funded, live_key, client_for, sandbox
):
    ApiKey.objects.filter(pk=live_key.api_key.pk).update(remix=True)
    client = client_for(live_key)
    grid = fetch(client, submit(client, "/mj/submit/imagine", trueai_imagine("a red barn")))
    press = trueai_action(grid["id"], custom_id_of(grid, "V4"))
    assert client.post("/mj/submit/action", press, format="json").json()["code"] == 21
    off = {**press, "enableRemix": "false"}
    assert client.post("/mj/submit/action", off, format="json").json()["code"] == 1


@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_a_bad_enable_remix_is_refused_and_changes_nothing(
    funded, live_key, client_for, sandbox, value
):
    before = snapshot(funded)
    body = {**trueai_imagine("a fox"), "enableRemix": value}
    answer = client_for(live_key).post("/mj/submit/imagine", body, format="json").json()
    assert answer["code"] == 4
    assert answer["description"] == "enableRemix: Must be true or false."
    assert snapshot(funded) == before


def test_a_remix_prompt_in_another_mode_is_refused(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    grid = fetch(client, submit(client, "/mj/submit/imagine", trueai_imagine("a red barn")))
    body = {**trueai_action(grid["id"], custom_id_of(grid, "V1")), "enableRemix": True}
    task_id = client.post("/mj/submit/action", body, format="json").json()["result"]
    before = snapshot(funded)
    answer = client.post(
        "/mj/submit/modal", {"taskId": task_id, "prompt": "a blue ocean --relax"}, format="json"
    ).json()
    assert answer["code"] == 4, answer
    assert Task.objects.get(pk=task_id).status == Status.MODAL
    assert snapshot(funded) == before


# --- native -----------------------------------------------------------------------------------


def test_native_prompt_on_a_variation_is_a_remix(funded, live_key, sandbox):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    grid = run_to_completion(
        api.post(
            "/api/v1/tasks", {"action": "IMAGINE", "prompt": "a red barn"}, format="json"
        ).json()["id"]
    )
    answer = api.post(
        "/api/v1/tasks",
        {"parent": grid.pk, "button": "V2", "prompt": "a deep blue ocean"},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    remixed = run_to_completion(answer.json()["id"])
    assert remixed.status == Status.SUCCESS and remixed.params["remix"] is True
    assert remixed.prompt_en == "a deep blue ocean"
    assert remixed.price == price_get(action=Action.VARIATION, mode=Mode.FAST)

    waiting = api.post(
        "/api/v1/tasks", {"parent": grid.pk, "button": "REROLL", "remix": True}, format="json"
    ).json()
    assert waiting["status"] == Status.MODAL
    done = api.post(
        f"/api/v1/tasks/{waiting['id']}/modal", {"prompt": "a deep blue ocean"}, format="json"
    )
    assert done.status_code == 200, done.json()
    reroll = run_to_completion(waiting["id"])
    assert reroll.action == Action.REROLL and reroll.prompt_en == "a deep blue ocean"
    painted = render.render_grid("a deep blue ocean", reroll.seed)
    assert storage.read_file(reroll.result["image"]) == painted


# --- TTAPI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "action"), [("variation3", Action.VARIATION), ("reroll", Action.REROLL)]
)
def test_ttapi_prompt_on_an_action_is_a_remix(funded, live_key, client_for, sandbox, name, action):
    client = client_for(live_key)
    created = client.post(
        "/midjourney/v1/imagine", {"prompt": "a red barn", "mode": "fast"}, format="json"
    ).json()["data"]["jobId"]
    run_to_completion(created)
    answer = client.post(
        "/midjourney/v1/action",
        {"jobId": created, "action": name, "prompt": "a deep blue ocean"},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    remixed = run_to_completion(answer.json()["data"]["jobId"])
    assert (remixed.status, remixed.action) == (Status.SUCCESS, action)
    assert remixed.prompt_en == "a deep blue ocean" and remixed.params["remix"] is True


def test_ttapi_never_waits_for_a_remix_prompt(funded, live_key, client_for, sandbox):
    ApiKey.objects.filter(pk=live_key.api_key.pk).update(remix=True)
    client = client_for(live_key)
    created = client.post(
        "/midjourney/v1/imagine", {"prompt": "a red barn", "mode": "fast"}, format="json"
    ).json()["data"]["jobId"]
    run_to_completion(created)
    answer = client.post(
        "/midjourney/v1/action", {"jobId": created, "action": "variation1"}, format="json"
    )
    task = Task.objects.get(pk=answer.json()["data"]["jobId"])
    assert task.status != Status.MODAL and "remix" not in task.params
    assert button_id(Task.objects.get(pk=created), label="V1") == task.custom_id


# --- draft mode is priced on its own ----------------------------------------------------------


def test_a_draft_imagine_and_its_reroll_are_charged_the_draft_price(
    funded, live_key, client_for, sandbox
):
    client = client_for(live_key)
    draft_price = price_get(action="IMAGINE_DRAFT", mode=Mode.FAST)
    assert 0 < draft_price < price_get(action=Action.IMAGINE, mode=Mode.FAST)
    before = snapshot(funded)[0]
    grid = fetch(
        client, submit(client, "/mj/submit/imagine", trueai_imagine("a red barn --draft --v 7"))
    )
    task = Task.objects.get(pk=grid["id"])
    assert (task.status, task.price, task.params["draft"]) == (Status.SUCCESS, draft_price, True)
    reroll_id = next(b["customId"] for b in grid["buttons"] if b["emoji"] == "🔄")
    reroll = Task.objects.get(
        pk=submit(client, "/mj/submit/action", trueai_action(grid["id"], reroll_id))
    )
    assert (reroll.action, reroll.price) == (Action.REROLL, draft_price)
    plain = Task.objects.get(
        pk=submit(client, "/mj/submit/imagine", trueai_imagine("a red barn --v 7"))
    )
    assert plain.price == price_get(action=Action.IMAGINE, mode=Mode.FAST)
    assert snapshot(funded)[0] == before - 2 * draft_price - plain.price

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key.plaintext}")
    listed = api.get("/api/v1/prices").json()["prices"]
    assert listed["IMAGINE_DRAFT"]["FAST"] == draft_price
