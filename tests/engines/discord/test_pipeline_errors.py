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


def test_a_revoked_token_disables_the_account_and_its_tasks_run_elsewhere(
    client: APIClient,
    celery_worker_factory: Callable[..., Worker],
    organization: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
) -> None:
    """Discord answers 401 (the token was reset): the account is disabled with the reason, the
    gateway's session ends, and every task given to it but not yet sent runs on a healthy one."""
    bad, bad_token = make_account()
    wait_live(fake_discord, [bad_token])
    ids = []
    for n in range(3):
        created = client.post(
            "/api/v1/tasks", {"action": "IMAGINE", "prompt": f"a salt marsh {n}"}, format="json"
        )
        assert created.status_code == 201, created.json()
        ids.append(created.json()["id"])
    dispatch_pending()
    assert set(Task.objects.filter(pk__in=ids).values_list("upstream_account_id", flat=True)) == {
        bad.pk
    }
    before = fake_discord.stats()
    fake_discord.add_user(bad_token, revoked=True)  # REST answers 401 from now on
    task_start(task_id=ids[0])
    bad.refresh_from_db()
    assert (bad.is_enabled, bad.health) == (False, Health.NEEDS_VERIFICATION)
    assert "401" in bad.health_reason and "fresh token" in bad.health_reason
    assert Task.objects.get(pk=ids[0]).status == Status.NOT_START
    # Discord then ends the gateway session (4004): the account stays as it is.
    assert fake_discord.control("drop", {"token": bad_token, "how": "auth"})["dropped"] == 1
    wait_for(lambda: bad_token in fake_discord.stats()["live_sessions"], lambda live: not live)
    # The other two reach a worker: they are not sent with the dead token.
    celery_worker_factory()
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status=Status.NOT_START).count(),
        lambda waiting: waiting == 3,
    )
    good, good_token = make_account()
    wait_live(fake_discord, [good_token])
    tasks_sweep()

    for task_id in ids:
        done = _finished(client, task_id)
        assert done["status"] == "SUCCESS", done
        assert (done["error_code"], done["fail_reason"]) in (("", ""), (None, None)), done
        charged_once(task_id)
        mj = client.get(f"/mj/task/{task_id}/fetch").json()
        assert (mj["status"], mj["failReason"] or "") == ("SUCCESS", "")
    assert set(Task.objects.filter(pk__in=ids).values_list("upstream_account_id", flat=True)) == {
        good.pk
    }
    # Discord heard the bad token once (the first submit), and no interaction left with it.
    after = fake_discord.stats()
    assert after["unauthorized"] - before.get("unauthorized", 0) == 1
    assert after["interactions"] == before["interactions"] + 3
    assert after["duplicate_nonces"] == 0
    assert not DiscordJob.objects.filter(account_id=bad.pk).exclude(phase=Phase.REFUSED).exists()
    bad.refresh_from_db()
    assert (bad.is_enabled, bad.health) == (False, Health.NEEDS_VERIFICATION)
    assert balance_get(organization=organization).held == 0


@pytest.mark.parametrize("is_global", [False, True], ids=["per-route", "global"])
def test_rate_limits_are_waited_out_and_nothing_is_sent_twice(
    client: APIClient,
    celery_worker: Any,
    organization: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    is_global: bool,
) -> None:
    """Discord answers 429 to the worker's calls: each is waited out (``retry_after``, per route
    or for every route), no call is made while limited, every task succeeds and each
    interaction is sent once."""
    account, token = make_account()
    wait_live(fake_discord, [token])
    before = fake_discord.stats()
    # The next four REST calls of this account answer 429.
    fake_discord.add_user(token, rate_limit=4, retry_after=0.4, rate_limit_global=is_global)
    ids = []
    for n in range(3):
        created = client.post(
            "/api/v1/tasks", {"action": "IMAGINE", "prompt": f"a tide pool {n}"}, format="json"
        )
        assert created.status_code == 201, created.json()
        ids.append(created.json()["id"])
    for task_id in ids:
        done = _finished(client, task_id)
        assert done["status"] == "SUCCESS", done
        charged_once(task_id)
    after = fake_discord.stats()
    assert after["rate_limited"] - before.get("rate_limited", 0) == 4
    assert after.get("rate_limit_violations", 0) == before.get("rate_limit_violations", 0)
    assert after["interactions"] == before["interactions"] + len(ids)
    assert after["duplicate_nonces"] == 0
    account.refresh_from_db()
    assert (account.health, account.is_enabled) == (Health.HEALTHY, True)
    assert balance_get(organization=organization).held == 0


@pytest.mark.parametrize("fallback", [False, True], ids=["relax-only", "fast-falls-back"])
def test_an_account_out_of_fast_hours_keeps_serving_relax_work(
    client: APIClient,
    celery_worker: Any,
    organization: Any,
    make_account: Callable[..., Any],
    fake_discord: FakeDiscordThread,
    fallback: bool,
) -> None:
    """Out of fast hours, the only account still runs RELAX tasks — and FAST ones, in relax,
    when it falls back — while its health says why."""
    account, token = make_account(
        fake_user={"fast_exhausted": True}, fast_fallback_to_relax=fallback
    )
    wait_live(fake_discord, [token])

    def submit(prompt: str, mode: str) -> str:
        created = client.post(
            "/api/v1/tasks", {"action": "IMAGINE", "prompt": prompt, "mode": mode}, format="json"
        )
        assert created.status_code == 201, created.json()
        return str(created.json()["id"])

    fast = submit("a granite quarry", "FAST")
    if fallback:
        done = _finished(client, fast)
        assert done["status"] == "SUCCESS", done
        charged_once(fast)
    else:
        # Refused by the bot, back in the queue, and never given to this account again.
        wait_for(
            lambda: Task.objects.get(pk=fast).attempts,
            lambda attempts: attempts >= 1,
        )
    account.refresh_from_db()
    assert account.health == Health.FAST_HOURS_EXHAUSTED
    assert "fast hours" in account.health_reason.lower()

    relax = submit("a chalk cliff", "RELAX")
    done = _finished(client, relax)
    assert done["status"] == "SUCCESS", done
    charged_once(relax)
    second = submit("a basalt column", "FAST")
    if fallback:
        # Sent in relax at once: the bot refused this account's FAST work only the first time.
        done = _finished(client, second)
        assert done["status"] == "SUCCESS", done
        rows = DiscordJob.objects.filter(task_id=second)
        assert [row.prompt for row in rows] == ["a basalt column --relax"]
    else:
        tasks_sweep()
        assert Task.objects.get(pk=fast).status == Status.NOT_START
        assert Task.objects.get(pk=second).status == Status.NOT_START
    assert set(
        Task.objects.filter(status=Status.SUCCESS).values_list("upstream_account_id", flat=True)
    ) == {account.pk}
    account.refresh_from_db()
    assert (account.health, account.is_enabled) == (Health.FAST_HOURS_EXHAUSTED, True)
