"""Upstream callbacks: authenticated per account, mapped like polls, never moving finished tasks."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.test import Client
from django.urls import resolve

from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.engines.base import JobUpdate, PollResult
from apps.engines.mjproxy.services import mjproxy_callback_token_ensure
from apps.engines.models import UpstreamAccount
from apps.tasks import lifecycle
from apps.tasks import views as task_views
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import task_poll, upstream_callback_receive
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.integration_support import WAIT_TIMEOUT

from .helpers import mjproxy_account, start

FUNDS = 1_000_000


def _imagine(organization, live_key, prompt: str = "a harbour at dusk") -> Task:
    caller = Caller(organization=organization, api_key=live_key.api_key)
    return start(task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task.pk)


def _token(account: UpstreamAccount) -> str:
    return str(UpstreamAccount.objects.get(pk=account.pk).secrets["callback_token"])


def _post(account_id: int, token: str, body) -> tuple[int, dict]:
    response = Client().post(
        f"/engines/mjproxy/callback/{account_id}/{token}",
        data=json.dumps(body),
        content_type="application/json",
    )
    return response.status_code, response.json()


def _snapshot(task_id: str) -> tuple:
    return tuple(
        Task.objects.filter(pk=task_id)
        .values_list("status", "progress", "poll_token", "fail_reason", "result", "updated_at")
        .get()
    )


def _kinds(task_id: str) -> list[str]:
    return list(
        LedgerEntry.objects.filter(task_id=task_id).order_by("id").values_list("kind", flat=True)
    )


@pytest.mark.django_db
def test_submit_passes_a_per_account_hook_whose_token_is_stored_encrypted(funded, live_key, fake):
    account = mjproxy_account(fake, callbacks="true")
    task = _imagine(funded, live_key)
    token = _token(account)
    assert len(token) >= 40
    (submitted,) = fake.submits()
    assert submitted.body["notifyHook"] == (
        f"http://testserver/engines/mjproxy/callback/{account.pk}/{token}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secrets, options FROM engines_upstreamaccount WHERE id = %s", [account.pk]
        )
        raw_secrets, raw_options = cursor.fetchone()
    assert token not in raw_secrets
    assert token not in json.dumps(raw_options)
    # One token per account, kept across submits.
    _imagine(funded, live_key, "another")
    assert fake.submits()[-1].body["notifyHook"] == submitted.body["notifyHook"]
    assert task.status == Status.IN_PROGRESS


@pytest.mark.django_db
def test_callback_base_url_overrides_the_public_address(funded, live_key, fake):
    account = mjproxy_account(
        fake, callbacks=True, callback_base_url="http://mjgate.internal:8000/"
    )
    _imagine(funded, live_key)
    assert fake.submits()[-1].body["notifyHook"] == (
        f"http://mjgate.internal:8000/engines/mjproxy/callback/{account.pk}/{_token(account)}"
    )


@pytest.mark.django_db
def test_wrong_token_or_account_is_refused_and_changes_nothing(
    funded, live_key, fake, second_account_fake
):
    account = mjproxy_account(fake, callbacks=True)
    other = mjproxy_account(second_account_fake, "mj-other", callbacks=True)
    task = _imagine(funded, live_key)
    other_token = mjproxy_callback_token_ensure(account_id=other.pk)
    fake.finish(task.upstream_job_id)
    body = fake.task_json(task.upstream_job_id)
    before = _snapshot(task.pk)
    account_before = UpstreamAccount.objects.filter(pk=account.pk).values().get()
    token = _token(account)

    attempts = [
        (account.pk, token[:-1] + ("A" if token[-1] != "A" else "B")),
        (account.pk, "x"),
        (account.pk + 1000, token),
        (account.pk, other_token),  # another account's valid token
        (other.pk, token),
    ]
    for account_id, wrong in attempts:
        status, answer = _post(account_id, wrong, body)
        assert (status, answer) == (403, {"error": "This callback URL is not valid."})
    assert _snapshot(task.pk) == before
    assert UpstreamAccount.objects.filter(pk=account.pk).values().get() == account_before
    assert _kinds(task.pk) == [EntryKind.HOLD]
    assert balance_get(organization=funded).held == 14000


@pytest.fixture
def second_account_fake():
    from tests.fakes.mjproxy_server import FakeMjproxy

    server = FakeMjproxy(secret="second", duration=None).start()
    yield server
    server.stop()


@pytest.mark.django_db
def test_an_account_without_callbacks_accepts_none(funded, live_key, fake):
    account = mjproxy_account(fake)
    task = _imagine(funded, live_key)
    before = _snapshot(task.pk)
    status, _ = _post(account.pk, "anything", fake.task_json(task.upstream_job_id))
    assert status == 403
    assert _snapshot(task.pk) == before


@pytest.mark.django_db
def test_progress_callbacks_move_progress_forward_only(funded, live_key, fake):
    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    token = _token(account)
    fake.set_progress(task.upstream_job_id, 60)
    assert _post(account.pk, token, fake.task_json(task.upstream_job_id)) == (
        200,
        {"result": "progress"},
    )
    assert Task.objects.get(pk=task.pk).progress == 60
    # The same report again, and an older one arriving late, change nothing.
    assert _post(account.pk, token, fake.task_json(task.upstream_job_id))[1] == {
        "result": "unchanged"
    }
    stale = {**fake.task_json(task.upstream_job_id), "progress": "20%"}
    assert _post(account.pk, token, stale)[1] == {"result": "unchanged"}
    assert Task.objects.get(pk=task.pk).progress == 60


@pytest.mark.django_db
def test_success_callback_wakes_the_poller_and_late_callbacks_change_nothing(
    funded, live_key, fake
):
    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    token = _token(account)
    old_token = Task.objects.get(pk=task.pk).poll_token
    fake.finish(task.upstream_job_id)
    finished = fake.task_json(task.upstream_job_id)
    assert _post(account.pk, token, finished) == (200, {"result": "finishing"})
    woken = Task.objects.get(pk=task.pk)
    assert woken.status == Status.IN_PROGRESS  # the worker stores the images, not the web
    assert woken.poll_token != old_token
    # The poll chain that was already scheduled stops; the new one applies the result.
    task_poll(task_id=task.pk, token=old_token)
    assert Task.objects.get(pk=task.pk).status == Status.IN_PROGRESS
    fake.requests.clear()
    task_poll(task_id=task.pk, token=woken.poll_token)
    done = Task.objects.get(pk=task.pk)
    assert done.status == Status.SUCCESS
    assert fake.requests_to("/mj/task/list-by-condition") == []  # the callback's JSON was used
    assert _kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]

    before = _snapshot(task.pk)
    running = {**finished, "status": "IN_PROGRESS", "progress": "30%"}
    failed = {**finished, "status": "FAILURE", "failReason": "late failure"}
    for late in (finished, running, failed):
        assert _post(account.pk, token, late) == (200, {"result": "unchanged"})
    assert _snapshot(task.pk) == before
    assert _kinds(task.pk) == [EntryKind.HOLD, EntryKind.CAPTURE]
    balance = balance_get(organization=funded)
    assert (balance.available, balance.held) == (FUNDS - 14000, 0)


@pytest.mark.django_db
def test_failure_callback_fails_the_task_once_and_releases_the_hold(funded, live_key, fake):
    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    token = _token(account)
    fake.fail(task.upstream_job_id, "Job action restricted: banned prompt")
    body = fake.task_json(task.upstream_job_id)
    assert _post(account.pk, token, body) == (200, {"result": "failed"})
    failed = Task.objects.get(pk=task.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == ErrorCode.BANNED_PROMPT
    assert failed.fail_reason == (
        "The upstream rejected the prompt as banned: Job action restricted: banned prompt"
    )
    before = _snapshot(task.pk)
    assert _post(account.pk, token, body) == (200, {"result": "unchanged"})
    success = {**body, "status": "SUCCESS", "progress": "100%"}
    assert _post(account.pk, token, success) == (200, {"result": "unchanged"})
    assert _snapshot(task.pk) == before
    assert _kinds(task.pk) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance_get(organization=funded).held == 0
    account.refresh_from_db()
    assert account.total_failed == 1


@pytest.mark.django_db
def test_unknown_or_foreign_upstream_ids_are_ignored(funded, live_key, fake, second_account_fake):
    account = mjproxy_account(fake, callbacks=True)
    other = mjproxy_account(second_account_fake, "mj-other", callbacks=True)
    task = _imagine(funded, live_key)
    token = _token(account)
    body = fake.task_json(task.upstream_job_id)
    before = _snapshot(task.pk)
    assert _post(account.pk, token, {**body, "id": "999"}) == (200, {"result": "ignored"})
    assert _post(account.pk, token, {"status": "SUCCESS"}) == (200, {"result": "ignored"})
    # The job belongs to the first account; the second account's valid hook cannot touch it.
    other_token = mjproxy_callback_token_ensure(account_id=other.pk)
    assert _post(other.pk, other_token, {**body, "status": "FAILURE"}) == (
        200,
        {"result": "ignored"},
    )
    assert _snapshot(task.pk) == before
    response = Client().post(
        f"/engines/mjproxy/callback/{account.pk}/{token}",
        data=b"not json",
        content_type="text/plain",
    )
    assert response.status_code == 400
    assert Client().get(f"/engines/mjproxy/callback/{account.pk}/{token}").status_code == 405
    assert _snapshot(task.pk) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_fake_upstream_calls_us_back_over_http(live_server, organization, make_key, fund):
    """Real callbacks from the fake server to a live mjgate web server."""
    from tests.fakes.mjproxy_server import FakeMjproxy

    fund(organization, FUNDS)
    live_key = make_key(organization)
    fake = FakeMjproxy(secret="s", duration=None, callbacks=True).start()
    try:
        mjproxy_account(fake, callbacks=True, callback_base_url=live_server.url)
        task = _imagine(organization, live_key)
        fake.set_progress(task.upstream_job_id, 70)
        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline and Task.objects.get(pk=task.pk).progress != 70:
            time.sleep(0.05)
        assert Task.objects.get(pk=task.pk).progress == 70
        token = Task.objects.get(pk=task.pk).poll_token
        fake.finish(task.upstream_job_id)
        while time.monotonic() < deadline and Task.objects.get(pk=task.pk).poll_token == token:
            time.sleep(0.05)
        woken = Task.objects.get(pk=task.pk)
        assert woken.poll_token != token
        while time.monotonic() < deadline and len(fake.callback_log) < 3:
            time.sleep(0.05)  # the fake logs a callback after reading our answer
        assert [(entry[1], entry[2]["status"]) for entry in fake.callback_log] == [
            ("200", "SUBMITTED"),
            ("200", "IN_PROGRESS"),
            ("200", "SUCCESS"),
        ]
        task_poll(task_id=task.pk, token=woken.poll_token)
        assert Task.objects.get(pk=task.pk).status == Status.SUCCESS
    finally:
        fake.stop()


@pytest.mark.django_db
def test_the_callback_arrives_on_the_tasks_side_route_and_the_lifecycle_applies_it(
    funded, live_key, fake, monkeypatch
):
    match = resolve("/engines/mjproxy/callback/7/some-token")
    assert match.func is task_views.engine_callback
    assert match.kwargs == {"engine": "mjproxy", "account_id": 7, "token": "some-token"}

    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    applied: list[JobUpdate] = []
    real_apply = lifecycle.task_apply_update

    def spy(*, update: JobUpdate) -> str:
        applied.append(update)
        return real_apply(update=update)

    monkeypatch.setattr(lifecycle, "task_apply_update", spy)
    fake.set_progress(task.upstream_job_id, 60)
    assert _post(account.pk, _token(account), fake.task_json(task.upstream_job_id)) == (
        200,
        {"result": "progress"},
    )
    assert applied == [
        JobUpdate(
            account_id=account.pk,
            upstream_job_id=task.upstream_job_id,
            result=PollResult(status=PollResult.RUNNING, progress=60),
        )
    ]
    assert Task.objects.get(pk=task.pk).progress == 60


@pytest.mark.django_db
def test_engines_without_callbacks_and_unknown_engines_are_refused_alike(funded, live_key, fake):
    account = mjproxy_account(fake, callbacks=True)
    task = _imagine(funded, live_key)
    before = _snapshot(task.pk)
    body = json.dumps(fake.task_json(task.upstream_job_id))
    for engine in ("sandbox", "carrier-pigeon"):
        response = Client().post(
            f"/engines/{engine}/callback/{account.pk}/{_token(account)}",
            data=body,
            content_type="application/json",
        )
        assert (response.status_code, response.json()) == (
            403,
            {"error": "This callback URL is not valid."},
        )
    assert _snapshot(task.pk) == before


def _image_gets(fake) -> int:
    return len([r for r in fake.requests if r.path.startswith("/images/")])


def test_a_success_callback_while_a_step_finishes_the_task_leaves_that_step_alone(
    funded, live_key, fake, monkeypatch
):
    """A poll step is storing the finished image when the upstream's SUCCESS callback arrives
    (with callbacks on, the usual case): the callback leaves the task to that step, which
    finishes it with the image it stored. Before, the callback started a new poll chain: the
    step lost its compare-and-set, deleted the result it had stored, and the new chain
    downloaded and stored the whole thing again."""
    account = mjproxy_account(fake, callbacks=True)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    task = start(task_submit(caller=caller, action=Action.IMAGINE, prompt="a lighthouse").task.pk)
    cb_token = str(UpstreamAccount.objects.get(pk=account.pk).secrets["callback_token"])
    fake.finish(task.upstream_job_id)
    payload = fake.task_json(task.upstream_job_id)
    t1 = Task.objects.get(pk=task.pk).poll_token

    real_store = lifecycle.storage.store_result
    fired: list[str] = []

    def store_then_callback(**kwargs):
        result = real_store(**kwargs)
        if not fired:
            # The callback lands while this worker is storing the image it downloaded.
            fired.append(
                upstream_callback_receive(
                    engine_name="mjproxy", account_id=account.pk, token=cb_token, payload=payload
                )
            )
        return result

    monkeypatch.setattr(lifecycle.storage, "store_result", store_then_callback)
    task_poll(task_id=task.pk, token=t1)
    after = Task.objects.get(pk=task.pk)
    assert fired == ["unchanged"]
    assert after.status == Status.SUCCESS, (
        f"in-flight result discarded: status={after.status}, token rotated "
        f"{t1!r}->{after.poll_token!r}, image downloads so far={_image_gets(fake)}"
    )
    assert _image_gets(fake) == 1  # downloaded once
