"""Removing an organization's last own upstream account serving a mode fails its queued
own-only tasks of that mode at once (apps/engines/own_services.py), instead of letting them
hold their tokens until the start deadline: deleting it, taking the mode away (the tenant's
change or the operator's admin), and a submit racing with either."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.accounts.models import MembershipTier, Organization
from apps.billing.audit import ledger_audit
from apps.billing.models import EntryKind, LedgerEntry
from apps.billing.selectors import balance_get
from apps.core.errors import Conflict
from apps.engines.models import UpstreamAccount
from apps.engines.own_services import (
    own_account_delete,
    own_account_set_enabled,
    own_account_update,
)
from apps.tasks.enums import Action, ErrorCode, Mode, Pool, Status
from apps.tasks.errors import InputError
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services import acceptance
from apps.tasks.services import inputs as submit_inputs
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press
from apps.tasks.services.submit import task_submit
from apps.webhooks.models import WebhookEndpoint, WebhookEvent
from tests.factories import UpstreamAccountFactory, UserFactory
from tests.races import lock_wait_seen, on_thread
from tests.tasks.conftest import sent  # noqa: F401 - fixture
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db

FUNDS = 1_000_000


def _premium(organization: Organization, fund: Any) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, FUNDS)
    return organization


@pytest.fixture
def premium(organization: Organization, fund: Any) -> Organization:
    return _premium(organization, fund)


def _caller(organization: Organization, make_key: Any, pool: str = Pool.OWN) -> Caller:
    return Caller(organization=organization, api_key=make_key(organization, pool=pool).api_key)


def _queued(caller: Caller, prompt: str, mode: str = Mode.FAST) -> Task:
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt, mode=mode).task
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START  # tests dispatch themselves
    return task


def _status(task: Task) -> str:
    return Task.objects.get(pk=task.pk).status


def _assert_failed_and_released(task: Task, mode: str = Mode.FAST) -> None:
    failed = Task.objects.get(pk=task.pk)
    assert failed.status == Status.FAILURE
    assert failed.error_code == ErrorCode.ACCOUNT_UNAVAILABLE
    assert f"serves {mode} mode" in failed.fail_reason
    assert "pool own" in failed.fail_reason
    assert failed.finished_at is not None
    kinds = sorted(LedgerEntry.objects.filter(task=failed).values_list("kind", flat=True))
    assert kinds == sorted([EntryKind.HOLD, EntryKind.RELEASE])
    assert failed.tokens_charged == 0


def _ledger_clean() -> None:
    assert ledger_audit().ok
    call_command("ledger_check")  # exits 1 (CommandError) on any drift


def test_deleting_the_last_own_account_fails_its_queued_own_tasks_and_gives_tokens_back(
    premium, make_key
):
    mine = UpstreamAccountFactory(name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX])
    caller = _caller(premium, make_key)
    fast = _queued(caller, "a fox")
    relax = _queued(caller, "an owl", mode=Mode.RELAX)
    held = balance_get(organization=premium)
    assert held.held == fast.price + relax.price > 0
    premium.refresh_from_db()
    assert premium.unfinished_tasks == 2

    failed = own_account_delete(organization=premium, account_id=mine.pk)

    assert sorted(failed) == sorted([fast.pk, relax.pk])
    assert not UpstreamAccount.objects.filter(pk=mine.pk).exists()
    _assert_failed_and_released(fast)
    _assert_failed_and_released(relax, mode=Mode.RELAX)
    balance = balance_get(organization=premium)
    assert (balance.available, balance.held) == (FUNDS, 0)
    premium.refresh_from_db()
    assert premium.unfinished_tasks == 0  # the task table's trigger, through task_fail
    _ledger_clean()


def test_the_failed_task_reaches_the_webhook_outbox(premium, make_key):
    endpoint = WebhookEndpoint.objects.create(
        organization=premium, url="https://hooks.example.com/org"
    )
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    task = _queued(_caller(premium, make_key), "a fox")

    own_account_delete(organization=premium, account_id=mine.pk)

    [event] = WebhookEvent.objects.filter(task_id=task.pk, event_type="task.failed")
    assert (event.endpoint, event.task_status) == (endpoint, Status.FAILURE)
    data = json.loads(event.body)["data"]
    assert (data["status"], data["error_code"]) == (Status.FAILURE, ErrorCode.ACCOUNT_UNAVAILABLE)
    assert "pool own" in data["fail_reason"]


def test_taking_the_mode_away_fails_only_that_modes_queued_own_tasks(premium, make_key):
    mine = UpstreamAccountFactory(name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX])
    caller = _caller(premium, make_key)
    fast = _queued(caller, "a fox")
    relax = _queued(caller, "an owl", mode=Mode.RELAX)

    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    _assert_failed_and_released(fast)
    assert _status(relax) == Status.NOT_START
    balance = balance_get(organization=premium)
    assert (balance.available, balance.held) == (FUNDS - relax.price, relax.price)
    _ledger_clean()


@pytest.mark.parametrize("other_enabled", [True, False], ids=["enabled", "disabled"])
def test_a_mode_another_own_account_still_serves_keeps_its_queue(premium, make_key, other_enabled):
    """Another own account serving FAST — switched on or off (a disabled account may be
    switched on again) — keeps the FAST queue; the RELAX one nobody serves any more fails."""
    mine = UpstreamAccountFactory(name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX])
    caller = _caller(premium, make_key)
    fast = _queued(caller, "a fox")
    relax = _queued(caller, "an owl", mode=Mode.RELAX)
    UpstreamAccountFactory(
        name="second", owner=premium, modes=[Mode.FAST], is_enabled=other_enabled
    )

    failed = own_account_delete(organization=premium, account_id=mine.pk)

    assert failed == [relax.pk]
    assert _status(fast) == Status.NOT_START
    _assert_failed_and_released(relax, mode=Mode.RELAX)
    assert balance_get(organization=premium).held == fast.price
    _ledger_clean()


def test_a_disabled_account_keeps_the_queue_until_it_is_deleted(premium, make_key):
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    task = _queued(_caller(premium, make_key), "a fox")

    own_account_set_enabled(organization=premium, account_id=mine.pk, enabled=False)
    assert _status(task) == Status.NOT_START  # switched off is not gone
    assert balance_get(organization=premium).held == task.price

    own_account_delete(organization=premium, account_id=mine.pk)
    _assert_failed_and_released(task)
    _ledger_clean()


def test_a_running_task_is_left_to_finish(premium, make_key):
    mine = UpstreamAccountFactory(
        name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX], concurrency=1
    )
    caller = _caller(premium, make_key)
    running = _queued(caller, "a fox")
    queued = _queued(caller, "a fox again")
    dispatch_pending()
    assert Task.objects.get(pk=running.pk).upstream_account_id == mine.pk
    assert _status(running) == Status.SUBMITTED
    with pytest.raises(Conflict):  # a busy account is never removed
        own_account_delete(organization=premium, account_id=mine.pk)
    assert _status(queued) == Status.NOT_START

    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    after = Task.objects.get(pk=running.pk)
    assert (after.status, after.upstream_account_id, after.error_code) == (
        Status.SUBMITTED,
        mine.pk,
        "",
    )
    _assert_failed_and_released(queued)
    assert balance_get(organization=premium).held == running.price
    _ledger_clean()


def test_own_then_shared_tasks_are_left_for_the_shared_pool(premium, make_key):
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    own = _queued(_caller(premium, make_key), "a fox")
    either = _queued(_caller(premium, make_key, Pool.OWN_THEN_SHARED), "an owl")

    own_account_delete(organization=premium, account_id=mine.pk)

    _assert_failed_and_released(own)
    assert _status(either) == Status.NOT_START
    assert balance_get(organization=premium).held == either.price
    _ledger_clean()


def test_other_organizations_are_untouched(premium, make_key, fund, other_organization):
    _premium(other_organization, fund)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    UpstreamAccountFactory(name="theirs", owner=other_organization)
    own = _queued(_caller(premium, make_key), "a fox")
    theirs_own = _queued(_caller(other_organization, make_key), "a cat")
    theirs_shared = _queued(_caller(other_organization, make_key, Pool.SHARED), "a cow")

    own_account_delete(organization=premium, account_id=mine.pk)

    _assert_failed_and_released(own)
    assert _status(theirs_own) == Status.NOT_START
    assert _status(theirs_shared) == Status.NOT_START
    assert balance_get(organization=other_organization).held == (
        theirs_own.price + theirs_shared.price
    )
    _ledger_clean()


def test_the_operators_admin_taking_the_mode_away_fails_them_too(premium, make_key):
    mine = UpstreamAccountFactory(name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX])
    task = _queued(_caller(premium, make_key), "a fox")
    client = Client()
    client.force_login(UserFactory(email="ops@example.com", is_staff=True, is_superuser=True))

    response = client.post(
        reverse("admin:engines_upstreamaccount_change", args=[mine.pk]),
        {
            "name": "mine",
            "engine": "sandbox",
            "modes": ["RELAX"],
            "concurrency": "3",
            "queue_size": "10",
            "run_timeout_seconds": "300",
            "options": '{"duration": 0}',
            "new_secrets": "",
        },
        follow=True,
    )

    assert response.status_code == 200
    mine.refresh_from_db()
    assert (mine.modes, mine.run_timeout_seconds) == ([Mode.RELAX], 300)
    _assert_failed_and_released(task)
    assert "1 queued own-only task(s)" in response.content.decode()
    _ledger_clean()


def test_a_follow_up_that_only_the_removed_account_could_run_is_refused(premium, make_key):
    """A follow-up of a task an own account ran is an own task too (while that account
    exists): with no own account serving its mode any more it is refused, not queued to wait
    for its start deadline."""
    mine = UpstreamAccountFactory(name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX])
    parent = run_to_completion(_queued(_caller(premium, make_key), "a heron").pk)
    assert (parent.status, parent.upstream_account_id) == (Status.SUCCESS, mine.pk)
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])
    tasks, entries = Task.objects.count(), LedgerEntry.objects.count()

    with pytest.raises(InputError) as refused:
        task_press(
            caller=_caller(premium, make_key, Pool.SHARED),
            parent_id=parent.pk,
            custom_id=parent.buttons[0]["custom_id"],
        )

    assert refused.value.code == "no_own_account"
    assert (Task.objects.count(), LedgerEntry.objects.count()) == (tasks, entries)
    assert balance_get(organization=premium).held == 0


# --- a submit racing with the removal -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_submit_whose_check_passed_before_the_delete_is_refused(
    organization,
    fund,
    make_key,
    monkeypatch,
    sent,  # noqa: F811
):
    """The submit checks for a usable own account before it takes the organization's lock;
    the delete commits in between. Accepted, the task would wait for an account that is gone:
    it is refused instead (the one-statement acceptance cannot check, so an own task takes the
    transaction), and nothing is written."""
    premium = _premium(organization, fund)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    caller = _caller(premium, make_key)
    check = submit_inputs.upstream_account_owned_usable

    def check_then_delete(**kwargs: Any) -> bool:
        usable = check(**kwargs)
        own_account_delete(organization=premium, account_id=mine.pk)
        return usable

    monkeypatch.setattr(submit_inputs, "upstream_account_owned_usable", check_then_delete)
    entries = LedgerEntry.objects.count()

    with pytest.raises(InputError) as refused:
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox")

    assert refused.value.code == "no_own_account"
    assert not UpstreamAccount.objects.filter(pk=mine.pk).exists()
    assert not Task.objects.exists()
    assert LedgerEntry.objects.count() == entries
    balance = balance_get(organization=premium)
    assert (balance.available, balance.held) == (FUNDS, 0)
    premium.refresh_from_db()
    assert premium.unfinished_tasks == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_delete_waits_for_a_submit_holding_the_lock_and_fails_its_task(
    organization,
    fund,
    make_key,
    monkeypatch,
    sent,  # noqa: F811
):
    """The submit accepted its task (the organization's row locked, not committed yet) when
    the delete comes: the delete waits for that lock, then sees the task and fails it."""
    premium = _premium(organization, fund)
    mine = UpstreamAccountFactory(name="mine", owner=premium)
    caller = _caller(premium, make_key)
    inserted, go = threading.Event(), threading.Event()
    publish = acceptance.task_changed

    def publish_after_a_pause(**kwargs: Any) -> Any:
        if threading.current_thread().name == "submit":
            inserted.set()
            go.wait(30)
        return publish(**kwargs)

    monkeypatch.setattr(acceptance, "task_changed", publish_after_a_pause)
    out: dict[str, Any] = {}
    submit_thread = on_thread(
        out, "submit", lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox")
    )
    assert inserted.wait(30), out
    delete_thread = on_thread(
        out, "delete", lambda: own_account_delete(organization=premium, account_id=mine.pk)
    )
    waiting = lock_wait_seen(delete_thread)
    go.set()
    submit_thread.join(30)
    delete_thread.join(30)

    outcome, failed = out["submit"], out["delete"]
    assert not isinstance(outcome, BaseException), outcome
    assert not isinstance(failed, BaseException), failed
    assert waiting, "the delete did not wait for the submit's organization lock"
    assert failed == [outcome.task.pk]
    _assert_failed_and_released(outcome.task)
    balance = balance_get(organization=premium)
    assert (balance.available, balance.held) == (FUNDS, 0)
    _ledger_clean()
