"""Native v1 tasks API (SPEC §6.3)."""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.protocols.common import TIER_LIMIT_RETRY_AFTER
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Protocol, Task
from tests.tasks.helpers import png_data_url, run_to_completion

from .conftest import snapshot

pytestmark = pytest.mark.django_db

TASKS = "/api/v1/tasks"
TASK_KEYS = {
    "id", "object", "action", "status", "mode", "is_test", "parent", "button", "prompt",
    "prompt_en", "description", "metadata", "webhook_url", "progress", "image_url", "image_urls",
    "thumbnail_url", "video_urls", "poster_url", "buttons", "properties", "seed", "fail_reason", "error_code", "price",
    "pool", "platform_fee",
    "created_at", "submitted_at", "started_at", "finished_at",
}  # fmt: skip


def test_create_imagine_then_get(funded, live_key, client_for, sandbox):
    client = client_for(live_key)
    response = client.post(
        TASKS,
        {
            "action": "IMAGINE",
            "prompt": "a red fox",
            "mode": "relax",
            "webhook_url": "https://hooks.example/n",
            "metadata": {"order": 17, "tags": ["a"]},
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == TASK_KEYS
    task = Task.objects.get(pk=body["id"])
    assert (task.protocol, task.mode, task.metadata) == (
        Protocol.NATIVE,
        Mode.RELAX,
        {"order": 17, "tags": ["a"]},
    )
    assert body["status"] == "NOT_START"  # accepted; the dispatch message assigns it
    assert body["price"] == 7000
    assert body["webhook_url"] == "https://hooks.example/n"
    run_to_completion(task.pk)
    fetched = client.get(f"{TASKS}/{task.pk}").json()
    assert fetched["status"] == "SUCCESS"
    assert fetched["progress"] == 100
    assert len(fetched["image_urls"]) == 4
    assert [b["name"] for b in fetched["buttons"]][:4] == ["U1", "U2", "U3", "U4"]
    # The native button shape is a public contract: it keeps its keys whatever we store.
    task.refresh_from_db()
    assert [list(b) for b in fetched["buttons"]] == [
        ["customId", "emoji", "label", "type", "style", "name"]
    ] * len(task.buttons)
    assert [b["customId"] for b in fetched["buttons"]] == [b["custom_id"] for b in task.buttons]
    assert fetched["metadata"] == {"order": 17, "tags": ["a"]}


@pytest.mark.parametrize("button", ["U3", "upsample3", "customId"])
def test_follow_up_by_alias_or_custom_id(funded, live_key, client_for, finished_imagine, button):
    grid = finished_imagine(protocol=Protocol.NATIVE)
    custom_id = next(b["custom_id"] for b in grid.buttons if b["label"] == "U3")
    response = client_for(live_key).post(
        TASKS,
        {"parent": grid.pk, "button": custom_id if button == "customId" else button},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["action"], body["parent"], body["button"]) == ("UPSCALE", grid.pk, custom_id)


def test_vary_region_via_modal(funded, live_key, client_for, finished_imagine):
    client = client_for(live_key)
    grid = finished_imagine()
    up = client.post(TASKS, {"parent": grid.pk, "button": "U1"}, format="json").json()
    upscaled = run_to_completion(up["id"])
    waiting = client.post(TASKS, {"parent": upscaled.pk, "button": "VARY_REGION"}, format="json")
    assert waiting.status_code == 201
    assert waiting.json()["status"] == "MODAL"
    done = client.post(
        f"{TASKS}/{waiting.json()['id']}/modal",
        {"prompt": "a crown", "mask": png_data_url((255, 255, 255))},
        format="json",
    )
    assert done.status_code == 200
    assert done.json()["status"] in ("SUBMITTED", "NOT_START")
    assert done.json()["action"] == "VARIATION"


def test_create_errors(funded, live_key, client_for, finished_imagine, other_organization):
    client = client_for(live_key)
    grid = finished_imagine()
    before = snapshot(funded)
    neither = client.post(TASKS, {"prompt": "x"}, format="json")
    assert neither.status_code == 400
    assert neither.json()["error"]["code"] == "validation_error"
    assert neither.json()["error"]["details"] == {
        "action": ["Give an action, or parent and button for a follow-up."]
    }
    too_big = client.post(
        TASKS,
        {"action": "IMAGINE", "prompt": "x", "metadata": {"blob": "x" * (16 * 1024)}},
        format="json",
    )
    assert too_big.status_code == 400
    assert too_big.json()["error"]["details"] == {
        "metadata": ["metadata may be at most 16384 bytes of JSON."]
    }
    empty_prompt = client.post(TASKS, {"action": "IMAGINE", "prompt": ""}, format="json")
    assert empty_prompt.status_code == 400
    assert empty_prompt.json()["error"]["message"] == (
        "The prompt is empty; describe the image you want."
    )
    assert empty_prompt.json()["error"]["details"] == {"field": "prompt"}
    missing_prompt = client.post(TASKS, {"action": "IMAGINE"}, format="json")
    assert missing_prompt.status_code == 400
    assert missing_prompt.json()["error"]["details"] == {"field": "prompt"}
    bad_button = client.post(TASKS, {"parent": grid.pk, "button": "U9"}, format="json")
    assert bad_button.status_code == 400
    assert bad_button.json()["error"]["details"]["available"][:2] == ["U1", "U2"]
    foreign = Task.objects.create(
        organization=other_organization, action=Action.IMAGINE, status=Status.SUCCESS
    )
    missing = [
        client.post(TASKS, {"parent": pid, "button": "U1"}, format="json")
        for pid in (foreign.pk, "12345")
    ]
    assert [m.status_code for m in missing] == [404, 404]
    assert (
        missing[0].json()
        == missing[1].json()
        == {
            "error": {
                "code": "parent_not_found",
                "message": "The parent task does not exist.",
                "details": None,
            }
        }
    )
    assert snapshot(funded) == before


def test_insufficient_balance_and_concurrency_limit(organization, live_key, client_for, fund):
    client = client_for(live_key)
    broke = client.post(TASKS, {"action": "IMAGINE", "prompt": "a fox"}, format="json")
    assert broke.status_code == 402
    assert broke.json()["error"]["code"] == "insufficient_balance"
    fund(organization, 100_000)
    for n in range(3):
        assert (
            client.post(TASKS, {"action": "IMAGINE", "prompt": f"f{n}"}, format="json").status_code
            == 201
        )
    before = snapshot(organization)
    limited = client.post(TASKS, {"action": "IMAGINE", "prompt": "more"}, format="json")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "concurrency_limit"
    assert limited.json()["error"]["details"] == {
        "limit": 3,
        "unfinished": 3,
        "tier": "FREE",
        "retry_after": TIER_LIMIT_RETRY_AFTER,
    }
    assert limited["Retry-After"] == str(TIER_LIMIT_RETRY_AFTER)
    assert snapshot(organization) == before


def test_list_filters_and_cursor_pagination(
    funded, live_key, test_mode_key, client_for, other_organization
):
    for n in range(5):
        Task.objects.create(
            organization=funded,
            action=Action.IMAGINE if n % 2 else Action.DESCRIBE,
            status=Status.SUCCESS if n < 3 else Status.FAILURE,
            mode=Mode.FAST,
            prompt=f"needle {n}" if n == 4 else f"hay {n}",
            is_test=n == 0,
        )
    Task.objects.create(organization=other_organization, action=Action.IMAGINE, prompt="needle x")
    client = client_for(live_key)
    first = client.get(TASKS, {"limit": 2}).json()
    assert set(first) == {"next", "previous", "results"}
    assert len(first["results"]) == 2
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    ids = [t["id"] for page in (first, second, third) for t in page["results"]]
    assert ids == list(
        Task.objects.filter(organization=funded)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    assert third["next"] is None
    assert [t["prompt"] for t in client.get(TASKS, {"search": "needle"}).json()["results"]] == [
        "needle 4"
    ]
    assert len(client.get(TASKS, {"status": "FAILURE"}).json()["results"]) == 2
    assert len(client.get(f"{TASKS}?status=FAILURE&status=SUCCESS").json()["results"]) == 5
    assert len(client.get(TASKS, {"action": "DESCRIBE"}).json()["results"]) == 3
    assert [t["is_test"] for t in client.get(TASKS, {"is_test": "true"}).json()["results"]] == [
        True
    ]
    assert len(client.get(TASKS, {"mode": "TURBO"}).json()["results"]) == 0
    bad = client.get(TASKS, {"status": "NOPE"})
    assert bad.status_code == 400
    assert client.get(TASKS, {"cursor": "garbage"}).status_code == 400


def test_cancel(funded, live_key, client_for, other_organization, outsider_key):
    client = client_for(live_key)
    created = client.post(TASKS, {"action": "IMAGINE", "prompt": "x"}, format="json").json()
    assert balance_get(organization=funded).held == 14000
    cancelled = client.post(f"{TASKS}/{created['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCEL"
    assert balance_get(organization=funded).held == 0
    again = client.post(f"{TASKS}/{created['id']}/cancel")
    assert again.status_code == 400
    outsider = client_for(outsider_key).post(f"{TASKS}/{created['id']}/cancel")
    assert outsider.status_code == 404


def test_test_key_tasks_are_marked(organization, test_mode_key, client_for, sandbox):
    client = client_for(test_mode_key)
    created = client.post(TASKS, {"action": "IMAGINE", "prompt": "free"}, format="json").json()
    assert (created["is_test"], created["price"]) == (True, 0)
    task = run_to_completion(created["id"])
    assert task.status == Status.SUCCESS
    assert client.get(TASKS, {"is_test": "true"}).json()["results"][0]["id"] == task.pk


def test_read_only_and_flagless_keys(funded, make_key, client_for):
    read_only = client_for(make_key(funded, read_only=True))
    refused = read_only.post(TASKS, {"action": "IMAGINE", "prompt": "x"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == (
        "This API key is read-only and cannot submit or change anything."
    )
    assert read_only.get(TASKS).status_code == 200
    no_flag = client_for(make_key(funded, can_midjourney=False)).get(TASKS)
    assert no_flag.status_code == 403
    assert no_flag.json()["error"]["message"] == "API key lacks the midjourney permission"
    assert Task.objects.count() == 0


def test_cursor_pagination_is_stable_when_created_at_ties(
    funded, live_key, client_for, other_organization
):
    """Tasks accepted in the same microsecond (a bulk import, a coarse clock) are each listed
    exactly once, forwards and backwards, whatever the page size; another tenant's never."""
    from django.utils import timezone

    same = timezone.now()
    tasks = [Task.objects.create(organization=funded, action=Action.IMAGINE) for _ in range(7)]
    theirs = Task.objects.create(organization=other_organization, action=Action.IMAGINE)
    Task.objects.filter(pk__in=[t.pk for t in tasks[1:6]] + [theirs.pk]).update(created_at=same)
    expected = list(
        Task.objects.filter(organization=funded)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    client = client_for(live_key)
    for limit in (1, 2, 3, 5):
        pages = [client.get(TASKS, {"limit": limit}).json()]
        while pages[-1]["next"]:
            pages.append(client.get(pages[-1]["next"]).json())
        assert [t["id"] for p in pages for t in p["results"]] == expected, limit
        backwards = [pages[-1]]
        while backwards[-1]["previous"]:
            backwards.append(client.get(backwards[-1]["previous"]).json())
        assert [t["id"] for p in reversed(backwards) for t in p["results"]] == expected, limit
        assert backwards[-1]["results"] == pages[0]["results"]
    # A forged cursor is a bad parameter, not a server error.
    for forged in ("e30", "eyJiIjoxLCJ0IjoiMjAyNCIsImkiOjF9", "!!!"):
        bad = client.get(TASKS, {"cursor": forged})
        assert bad.status_code == 400, forged
        assert bad.json()["error"]["details"] == {"cursor": "Use a cursor this API returned."}
