"""Each error class of the bot or Discord through the whole pipeline: API, worker, gateway.

A refusal that concerns the prompt or the action fails the task (hold released) and leaves the
account healthy; one that concerns the account sets the account's health and sends the task
back to the queue, from where it — and every task of that account not yet sent — runs on a
healthy account, charged once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.discord.fake import FakeDiscordThread
from apps.engines.discord.models import DiscordJob, Phase
from apps.engines.models import Health
from apps.tasks.enums import ErrorCode, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from tests.integration_support import Worker

from .pipeline_support import GatewayProcess, charged_once, wait_for, wait_live

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

TERMINAL = ("SUCCESS", "FAILURE", "CANCEL")


@pytest.fixture
def client(
    organization: Any,
    live_key: Any,
    fund: Any,
    gateway_process: Callable[[str], GatewayProcess],
) -> APIClient:
    fund(organization, 10_000_000)
    gateway_process("gw-errors")
    api = APIClient()
    api.credentials(HTTP_MJ_API_SECRET=live_key.plaintext)
    return api


def _finished(client: APIClient, task_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: client.get(f"/api/v1/tasks/{task_id}").json(),
        lambda body: body["status"] in TERMINAL,
    )


def _released(task_id: str) -> None:
    kinds = list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EntryKind.HOLD, EntryKind.RELEASE], kinds


@pytest.mark.parametrize(
    ("prompt", "code", "reason"),
    [
        ("a bloodbath scene", ErrorCode.BANNED_PROMPT, "Midjourney refused the prompt."),
        # We accept --exp, this bot does not know it: Midjourney, not us, rejects the parameter.
        ("a cat --exp 5", ErrorCode.INVALID_PARAMETER, "Unrecognized parameter(s): `--exp`"),
    ],
    ids=["banned-prompt", "invalid-parameter"],
)
def test_a_refused_prompt_fails_the_task_and_leaves_the_account_healthy(
    client: APIClient,
    celery_worker: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    prompt: str,
    code: str,
    reason: str,
) -> None:
    account, token = make_account()
    wait_live(fake_discord, [token])
    created = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt}, format="json")
    assert created.status_code == 201, created.json()
    done = _finished(client, created.json()["id"])
    assert (done["status"], done["error_code"]) == ("FAILURE", code), done
    assert reason in done["fail_reason"]
    _released(done["id"])
    mj = client.get(f"/mj/task/{done['id']}/fetch").json()
    assert (mj["errorCode"], mj["failReason"]) == (code, done["fail_reason"])
    account.refresh_from_db()
    assert (account.health, account.is_enabled) == (Health.HEALTHY, True)


def test_a_button_midjourney_no_longer_allows_fails_with_upstream_rejected(
    client: APIClient,
    celery_worker: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
) -> None:
    account, token = make_account()
    wait_live(fake_discord, [token])
    grid = client.post("/api/v1/tasks", {"action": "IMAGINE", "prompt": "a pier"}, format="json")
    grid_task = _finished(client, grid.json()["id"])
    assert grid_task["status"] == "SUCCESS"
    # Midjourney forgets old jobs: their buttons answer "Action not allowed".
    fake_discord.discord.world.bot_jobs.clear()
    pressed = client.post(
        "/api/v1/tasks", {"parent": grid_task["id"], "button": "U1"}, format="json"
    )
    assert pressed.status_code == 201, pressed.json()
    done = _finished(client, pressed.json()["id"])
    assert (done["status"], done["error_code"]) == ("FAILURE", ErrorCode.UPSTREAM_REJECTED), done
    assert "no longer available" in done["fail_reason"]
    _released(done["id"])
    account.refresh_from_db()
    assert account.health == Health.HEALTHY


@pytest.mark.parametrize(
    ("trouble", "code", "health"),
    [
        ({"fast_exhausted": True}, ErrorCode.FAST_HOURS_EXHAUSTED, Health.FAST_HOURS_EXHAUSTED),
        ({"captcha": True}, ErrorCode.NEEDS_VERIFICATION, Health.NEEDS_VERIFICATION),
        ({"subscribed": False}, ErrorCode.ACCOUNT_UNAVAILABLE, Health.NEEDS_VERIFICATION),
        ({"banned": True}, ErrorCode.ACCOUNT_UNAVAILABLE, Health.BANNED),
    ],
    ids=["fast-hours-exhausted", "captcha", "no-subscription", "blocked"],
)
def test_a_failed_account_sends_its_tasks_to_a_healthy_one(
    client: APIClient,
    celery_worker_factory: Callable[..., Worker],
    organization: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    trouble: dict[str, Any],
    code: str,
    health: str,
) -> None:
    bad, bad_token = make_account(fake_user=trouble)
    wait_live(fake_discord, [bad_token])
    before = fake_discord.stats()
    ids = []
    for n in range(3):
        created = client.post(
            "/api/v1/tasks", {"action": "IMAGINE", "prompt": f"a bell tower {n}"}, format="json"
        )
        assert created.status_code == 201, created.json()
        ids.append(created.json()["id"])
    # No worker yet: the dispatcher gives all three to the bad account's three slots, and their
    # start messages wait in the queue while the first one is sent (here, in this process).
    dispatch_pending()
    assert set(Task.objects.filter(pk__in=ids).values_list("upstream_account_id", flat=True)) == {
        bad.pk
    }
    task_start(task_id=ids[0])
    bad.refresh_from_db()
    assert (bad.health, Task.objects.get(pk=ids[0]).status) == (health, Status.NOT_START)
    assert bad.health_reason
    # A worker now takes the two start messages: those tasks must not reach the failed account.
    celery_worker_factory()
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status=Status.NOT_START).count(),
        lambda waiting: waiting == 3,
    )
    good, good_token = make_account()
    wait_live(fake_discord, [good_token])
    tasks_sweep()  # as beat would: dispatch what waits now that a healthy account is free

    for task_id in ids:
        done = _finished(client, task_id)
        assert done["status"] == "SUCCESS", done
        charged_once(task_id)
    assert set(Task.objects.filter(pk__in=ids).values_list("upstream_account_id", flat=True)) == {
        good.pk
    }
    refused = DiscordJob.objects.filter(account_id=bad.pk)
    assert [(row.task_id, row.phase, row.error_code) for row in refused] == [
        (ids[0], Phase.REFUSED, code)
    ]
    # One interaction to the failed account, then one per task on the healthy one.
    assert fake_discord.stats()["interactions"] == before["interactions"] + 1 + 3
    bad.refresh_from_db()
    assert bad.health == health
    assert balance_get(organization=organization).held == 0
