"""Account health, failover, follow-ups on the parent's account, concurrency and batch polling."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.billing.selectors import balance_get
from apps.engines.models import Health, UpstreamAccount
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import COOLDOWN_AFTER_FAILURES
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, tasks_sweep
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit
from tests.fakes.mjproxy_server import FakeMjproxy

from .helpers import closed_port_url, mjproxy_account, poll, set_tier, start, step

pytestmark = pytest.mark.django_db


@pytest.fixture
def second_fake():
    server = FakeMjproxy(secret="other-secret", duration=None).start()
    yield server
    server.stop()


def _submit(organization, live_key, prompt: str = "a lighthouse") -> Task:
    caller = Caller(organization=organization, api_key=live_key.api_key)
    return task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task


def _run_until_in_progress(task_id: str, steps: int = 20) -> Task:
    for _ in range(steps):
        if step(task_id) not in (Status.NOT_START, Status.SUBMITTED):
            break
    return Task.objects.get(pk=task_id)


def _finish(fake: FakeMjproxy, task: Task) -> Task:
    fake.finish(task.upstream_job_id)
    done = poll(task.pk)
    assert done.status == Status.SUCCESS
    return done


@pytest.mark.parametrize("failure", ["refused", "queue_full", "http_503"])
def test_an_unavailable_upstream_moves_the_task_to_another_healthy_account(
    funded, live_key, fake, second_fake, failure
):
    if failure == "refused":
        broken = mjproxy_account(None, "mj-broken", base_url=closed_port_url())
    else:
        broken = mjproxy_account(second_fake, "mj-broken")
        if failure == "queue_full":
            second_fake.scripted.extend([(23, "queue full")] * COOLDOWN_AFTER_FAILURES)
        else:
            second_fake.http_status = 503
    healthy = mjproxy_account(fake, "mj-healthy")
    assert broken.pk < healthy.pk  # the dispatcher's tie-break prefers the broken one

    task = _run_until_in_progress(_submit(funded, live_key).pk)

    assert task.status == Status.IN_PROGRESS
    assert task.upstream_account_id == healthy.pk
    assert task.attempts == COOLDOWN_AFTER_FAILURES
    assert len(fake.submits()) == 1
    if failure != "refused":
        assert len(second_fake.submits()) == COOLDOWN_AFTER_FAILURES
    broken.refresh_from_db()
    assert broken.health == Health.COOLING_DOWN
    assert broken.consecutive_failures == COOLDOWN_AFTER_FAILURES
    assert broken.health_reason.startswith(f"{COOLDOWN_AFTER_FAILURES} consecutive failures: ")
    assert balance_get(organization=funded).held == 14000  # still held while it runs
    _finish(fake, task)


def test_queue_full_requeues_and_the_same_account_takes_it_when_it_has_room(funded, live_key, fake):
    account = mjproxy_account(fake)
    fake.scripted.append((23, "queue full"))
    task_id = _submit(funded, live_key).pk
    dispatch_pending()
    step(task_id)  # submit → 23
    task = Task.objects.get(pk=task_id)
    assert (task.status, task.attempts, task.upstream_account_id) == (Status.NOT_START, 1, None)
    account.refresh_from_db()
    assert account.consecutive_failures == 1
    task = _run_until_in_progress(task_id)
    assert task.upstream_account_id == account.pk
    account.refresh_from_db()
    assert account.consecutive_failures == 0  # the upstream took a job: recovered
    assert len(fake.submits()) == 2


def test_a_cooled_down_account_comes_back_and_recovers_with_a_success(funded, live_key, fake):
    account = mjproxy_account(fake)
    fake.http_status = 503
    task_id = _submit(funded, live_key).pk
    for _ in range(COOLDOWN_AFTER_FAILURES):
        step(task_id)  # dispatch
        step(task_id)  # submit → 503 → requeue
    account.refresh_from_db()
    assert account.health == Health.COOLING_DOWN
    assert Task.objects.get(pk=task_id).status == Status.NOT_START
    assert dispatch_pending().assigned == []  # nobody serves it while cooling down

    fake.http_status = None
    UpstreamAccount.objects.filter(pk=account.pk).update(
        cooldown_until=timezone.now() - timedelta(seconds=1)
    )
    tasks_sweep()
    account.refresh_from_db()
    assert (account.health, account.health_reason) == (Health.HEALTHY, "")
    task = _run_until_in_progress(task_id)
    assert task.upstream_account_id == account.pk
    account.refresh_from_db()
    assert account.consecutive_failures == 0


def test_follow_ups_stay_on_the_parents_account(funded, live_key, fake, second_fake):
    set_tier(funded, "VIP")
    first = mjproxy_account(fake, "mj-a")
    second = mjproxy_account(second_fake, "mj-b")
    parent = _finish(fake, start(_submit(funded, live_key, "a parent").pk))
    assert parent.upstream_account_id == first.pk
    busy = start(_submit(funded, live_key, "keeps mj-a busy").pk)
    assert busy.upstream_account_id == first.pk  # still the lower pk while both are idle

    caller = Caller(organization=funded, api_key=live_key.api_key)
    u1 = next(b["custom_id"] for b in parent.buttons if b["label"] == "U1")
    child = start(task_press(caller=caller, parent_id=parent.pk, custom_id=u1).task.pk)
    assert child.upstream_account_id == first.pk  # although mj-b is idle
    assert second_fake.submits() == []
    assert second.pk != first.pk


def test_a_follow_up_whose_parent_account_is_gone_fails_clearly(
    funded, live_key, fake, second_fake
):
    first = mjproxy_account(fake, "mj-a")
    mjproxy_account(second_fake, "mj-b")
    parent = _finish(fake, start(_submit(funded, live_key, "a parent").pk))
    caller = Caller(organization=funded, api_key=live_key.api_key)
    v2 = next(b["custom_id"] for b in parent.buttons if b["label"] == "V2")
    available = balance_get(organization=funded).available

    # Cooling down may pass: the follow-up waits for its parent's account.
    UpstreamAccount.objects.filter(pk=first.pk).update(
        health=Health.COOLING_DOWN, cooldown_until=timezone.now() + timedelta(minutes=5)
    )
    child = task_press(caller=caller, parent_id=parent.pk, custom_id=v2).task
    tasks_sweep()
    assert Task.objects.get(pk=child.pk).status == Status.NOT_START

    # Disabled by the operator: it will not come back by itself, so the follow-up fails now.
    UpstreamAccount.objects.filter(pk=first.pk).update(is_enabled=False)
    report = tasks_sweep()
    assert report["parent_account_gone"] == 1
    failed = Task.objects.get(pk=child.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == ErrorCode.ACCOUNT_UNAVAILABLE
    assert failed.fail_reason == (
        "The upstream account that made the parent task is unavailable, so this follow-up "
        "cannot run."
    )
    assert balance_get(organization=funded).available == available
    assert balance_get(organization=funded).held == 0
    assert second_fake.submits() == []


@pytest.mark.parametrize(
    "gone",
    [
        {"health": Health.BANNED},
        {"modes": ["RELAX"]},
        {"is_enabled": False},
        {"health": Health.FAST_HOURS_EXHAUSTED},
    ],
    ids=["banned", "mode-dropped", "disabled", "out-of-fast-hours"],
)
def test_the_sweeper_finds_follow_ups_of_gone_accounts_without_loading_the_others(
    funded, live_key, fake, second_fake, monkeypatch, gone
):
    from apps.tasks import scheduling

    set_tier(funded, "VIP")
    first = mjproxy_account(fake, "mj-a", concurrency=1)
    second = mjproxy_account(second_fake, "mj-b", concurrency=1)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    started = [start(_submit(funded, live_key, f"on {name}").pk) for name in "ab"]
    on_first, on_second = _finish(fake, started[0]), _finish(second_fake, started[1])
    assert (on_first.upstream_account_id, on_second.upstream_account_id) == (first.pk, second.pk)
    # Both accounts busy, so the follow-ups queue; then mj-a goes away for good.
    start(_submit(funded, live_key, "keeps a busy").pk)
    start(_submit(funded, live_key, "keeps b busy").pk)
    children = {
        parent.upstream_account_id: [
            task_press(
                caller=caller,
                parent_id=parent.pk,
                custom_id=next(b["custom_id"] for b in parent.buttons if b["label"] == label),
            ).task.pk
            for label in ("U1", "U2", "V1")
        ]
        for parent in (on_first, on_second)
    }
    UpstreamAccount.objects.filter(pk=first.pk).update(**gone)
    checked: list[str] = []
    real_check = scheduling._parent_account_gone

    def counting(task):
        checked.append(task.pk)
        return real_check(task)

    monkeypatch.setattr(scheduling, "_parent_account_gone", counting)
    assert scheduling._fail_follow_ups_of_gone_accounts() == 3
    # Only the three that cannot run were even loaded; mj-b's wait for their account.
    assert sorted(checked) == sorted(children[first.pk])
    statuses = dict(Task.objects.filter(parent__isnull=False).values_list("pk", "status"))
    assert statuses == {
        **dict.fromkeys(children[first.pk], Status.FAILURE),
        **dict.fromkeys(children[second.pk], Status.NOT_START),
    }
    # Out of fast hours (an mjproxy account never falls back to relax): these FAST follow-ups
    # could only wait out their start deadline, so they fail now, saying why and what to do.
    exhausted = gone.get("health") == Health.FAST_HOURS_EXHAUSTED
    failed = [Task.objects.get(pk=pk) for pk in children[first.pk]]
    assert {t.mode for t in failed} == {"FAST"}
    assert {t.error_code for t in failed} == {
        ErrorCode.FAST_HOURS_EXHAUSTED if exhausted else ErrorCode.ACCOUNT_UNAVAILABLE
    }
    if exhausted:
        assert {t.fail_reason for t in failed} == {
            "The upstream account that made the parent task has run out of fast hours, so "
            "this follow-up cannot run in FAST mode; press the button again in RELAX mode."
        }


def test_a_follow_up_of_a_deleted_account_fails_instead_of_running_elsewhere(
    funded, live_key, fake, second_fake
):
    first = mjproxy_account(fake, "mj-a")
    mjproxy_account(second_fake, "mj-b")
    parent = _finish(fake, start(_submit(funded, live_key, "a parent").pk))
    first.delete()
    caller = Caller(organization=funded, api_key=live_key.api_key)
    u3 = next(b["custom_id"] for b in parent.buttons if b["label"] == "U3")
    child = start(task_press(caller=caller, parent_id=parent.pk, custom_id=u3).task.pk)
    assert child.status == Status.FAILURE
    assert child.error_code == ErrorCode.ACCOUNT_UNAVAILABLE
    assert child.fail_reason.startswith("The upstream account that made the parent task is")
    assert second_fake.submits() == []
    assert balance_get(organization=funded).held == 0


def test_the_upstream_is_never_sent_more_than_the_accounts_concurrency(funded, live_key, fake):
    set_tier(funded, "VIP")
    mjproxy_account(fake, concurrency=2)
    ids = [_submit(funded, live_key, f"picture {n}").pk for n in range(5)]
    for task_id in ids:
        _run_until_in_progress(task_id, steps=3)
    statuses = sorted(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses == [Status.IN_PROGRESS] * 2 + [Status.NOT_START] * 3
    assert len(fake.submits()) == 2

    finished = 0
    while finished < 5:
        running = Task.objects.filter(pk__in=ids, status=Status.IN_PROGRESS)
        assert running.count() <= 2
        task = running.order_by("started_at").first()
        assert task is not None
        _finish(fake, task)
        finished += 1
        for task_id in ids:
            if Task.objects.get(pk=task_id).status == Status.NOT_START:
                _run_until_in_progress(task_id, steps=3)
    assert len(fake.submits()) == 5
    assert fake.max_running == 2
    assert fake.submits_per_prompt() == {f"picture {n}": 1 for n in range(5)}


def test_one_request_polls_every_in_flight_task_of_the_account(funded, live_key, fake, settings):
    set_tier(funded, "VIP")
    account = mjproxy_account(fake, concurrency=5)
    tasks = [start(_submit(funded, live_key, f"batch {n}").pk) for n in range(5)]
    for task in tasks:
        fake.set_progress(task.upstream_job_id, 50)
    settings.MJPROXY_POLL_CACHE_SECONDS = 60
    fake.requests.clear()

    for task in tasks:
        assert poll(task.pk).progress == 50
    (batch,) = fake.requests_to("/mj/task/list-by-condition")
    assert sorted(batch.body["ids"]) == sorted(t.upstream_job_id for t in tasks)
    assert batch.body["ids"][0] == tasks[0].upstream_job_id

    # The next round within the cache period asks nobody; a new round asks in batches.
    for task in tasks:
        poll(task.pk)
    assert len(fake.requests_to("/mj/task/list-by-condition")) == 1
    settings.MJPROXY_POLL_BATCH_SIZE = 2
    from django.core.cache import cache

    from apps.engines.mjproxy.engine import batch_cache_key

    cache.delete(batch_cache_key(account.pk))
    fake.requests.clear()
    for task in tasks:
        poll(task.pk)
    sizes = [len(r.body["ids"]) for r in fake.requests_to("/mj/task/list-by-condition")]
    assert sizes == [2, 2, 1]
