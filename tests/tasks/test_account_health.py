"""Account health beyond healthy/unhealthy (SPEC §5, issue 13): an account whose fast hours ran
out still serves RELAX work (and FAST work when it falls back to relax), and the operators are
told by e-mail when any engine's account leaves the healthy state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail

from apps.accounts.models import MembershipTier
from apps.engines.base import TemporaryEngineError
from apps.engines.models import Health, UpstreamAccount
from apps.engines.selectors import upstream_account_modes, upstream_account_usable
from apps.engines.services import upstream_account_set_health, upstream_account_take_out
from apps.operator.selectors import stats_account_loads, stats_mode_queues
from apps.tasks.enums import Action, ErrorCode, Mode, Status
from apps.tasks.lifecycle import COOLDOWN, COOLDOWN_AFTER_FAILURES, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import (
    account_pick_other,
    dispatch_pending,
    task_expected_to_start,
    tasks_sweep,
)
from apps.tasks.services.submit import task_submit
from tests.factories import TaskFactory, UpstreamAccountFactory, UserFactory

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db

DISCORD_OPTIONS = {
    "token": "mfa.health-test-token-0123456789",
    "guild_id": "600000000000000001",
    "channel_id": "700000000000000001",
}


def _premium(organization: Any, fund: Callable[..., None]) -> None:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)


def _exhausted(account: UpstreamAccount) -> UpstreamAccount:
    UpstreamAccount.objects.filter(pk=account.pk).update(
        health=Health.FAST_HOURS_EXHAUSTED, health_reason="Credits exhausted."
    )
    account.refresh_from_db()
    return account


def _discord(name: str, **options: Any) -> UpstreamAccount:
    return UpstreamAccountFactory(
        engine="discord", name=name, options={**DISCORD_OPTIONS, **options}
    )


# --- fast hours exhausted: which modes still run ---------------------------------------------


@pytest.mark.parametrize(
    ("engine", "fallback", "modes"),
    [
        ("sandbox", None, [Mode.RELAX]),
        ("discord", False, [Mode.RELAX]),
        # FAST runs in relax; TURBO is paid for and never falls back.
        ("discord", True, [Mode.FAST, Mode.RELAX]),
    ],
    ids=["sandbox", "discord-no-fallback", "discord-fallback"],
)
def test_an_account_out_of_fast_hours_takes_relax_work_and_fast_only_with_fallback(
    clock: Any, engine: str, fallback: bool | None, modes: list[str]
) -> None:
    if engine == "sandbox":
        account = sandbox_account("out-of-fast")
    else:
        account = _discord("out-of-fast", fast_fallback_to_relax=fallback)
    assert upstream_account_modes(account, now=clock.now) == [Mode.FAST, Mode.RELAX, Mode.TURBO]
    account = _exhausted(account)
    assert upstream_account_modes(account, now=clock.now) == modes
    assert upstream_account_usable(account, now=clock.now)
    assert upstream_account_usable(account, now=clock.now, mode=Mode.RELAX)
    assert not upstream_account_usable(account, now=clock.now, mode=Mode.TURBO)
    assert upstream_account_usable(account, now=clock.now, mode=Mode.FAST) is bool(fallback)
    # Only relax hours left, but the account does not serve relax: nothing.
    UpstreamAccount.objects.filter(pk=account.pk).update(modes=[Mode.FAST, Mode.TURBO])
    account.refresh_from_db()
    assert upstream_account_usable(account, now=clock.now) is bool(fallback)


@pytest.mark.parametrize("health", [Health.NEEDS_VERIFICATION, Health.BANNED])
def test_other_unhealthy_states_still_take_nothing(clock: Any, health: str) -> None:
    account = _discord("down", fast_fallback_to_relax=True)
    UpstreamAccount.objects.filter(pk=account.pk).update(health=health)
    account.refresh_from_db()
    assert upstream_account_modes(account, now=clock.now) == []
    assert not upstream_account_usable(account, now=clock.now, mode=Mode.RELAX)


def test_the_dispatcher_gives_an_exhausted_account_relax_work_only(
    caller: Any, organization: Any, fund: Callable[..., None], clock: Any
) -> None:
    _premium(organization, fund)
    account = _exhausted(sandbox_account("out-of-fast", concurrency=4))
    fast = [
        task_submit(caller=caller, action=Action.SHORTEN, prompt=f"fast {n}", mode=Mode.FAST).task
        for n in range(3)
    ]
    # Three FAST tasks are queued ahead: they must not hide the RELAX one from the dispatcher.
    relax = task_submit(caller=caller, action=Action.SHORTEN, prompt="slow", mode=Mode.RELAX).task
    assert not task_expected_to_start(task=Task.objects.get(pk=fast[0].pk))
    assert dispatch_pending().assigned == [relax.pk]
    assert Task.objects.get(pk=relax.pk).upstream_account_id == account.pk
    assert set(
        Task.objects.filter(pk__in=[t.pk for t in fast]).values_list("status", flat=True)
    ) == {Status.NOT_START}
    # An operator's retry elsewhere also only finds it for RELAX work.
    assert account_pick_other(relax, exclude=None, now=clock.now).pk == account.pk
    # Fast hours renewed, the operator marks it healthy: the FAST tasks run.
    upstream_account_set_health(account=account, health=Health.HEALTHY, reason="")
    assert sorted(dispatch_pending().assigned) == sorted(t.pk for t in fast)


def test_a_discord_account_falling_back_to_relax_still_gets_fast_work(
    caller: Any, organization: Any, fund: Callable[..., None]
) -> None:
    _premium(organization, fund)
    _exhausted(_discord("strict"))
    lenient = _exhausted(_discord("lenient", fast_fallback_to_relax=True))
    fast = task_submit(caller=caller, action=Action.SHORTEN, prompt="fast", mode=Mode.FAST).task
    turbo = task_submit(caller=caller, action=Action.SHORTEN, prompt="t", mode=Mode.TURBO).task
    assert dispatch_pending().assigned == [fast.pk]
    assert Task.objects.get(pk=fast.pk).upstream_account_id == lenient.pk
    assert Task.objects.get(pk=turbo.pk).status == Status.NOT_START


@pytest.mark.parametrize(
    ("lenient", "mode", "fails"),
    [
        (False, Mode.FAST, True),
        (False, Mode.TURBO, True),
        (False, Mode.RELAX, False),
        (True, Mode.FAST, False),
        (True, Mode.TURBO, True),
    ],
    ids=["fast", "turbo", "relax-waits", "fast-falls-back", "turbo-never-falls-back"],
)
def test_a_follow_up_of_an_account_out_of_fast_hours_fails_at_once_unless_it_can_run(
    lenient: bool, mode: str, fails: bool
) -> None:
    # Follow-ups run on their parent's account (Discord's buttons belong to its messages).
    # Out of fast hours, that account takes no work of a mode that needs them: such a
    # follow-up could only wait out its start deadline, so the sweeper fails it now, saying why.
    options = {"fast_fallback_to_relax": True} if lenient else {}
    account = _exhausted(_discord("parent-account", **options))
    parent = TaskFactory(succeeded=True, engine="discord", upstream_account=account, mode=mode)
    child = TaskFactory(
        queued=True,
        organization=parent.organization,
        action=Action.UPSCALE,
        parent=parent,
        mode=mode,
    )
    report = tasks_sweep()
    child.refresh_from_db()
    if not fails:
        # It runs (the sweep's dispatch pass may already have sent it) on its parent's account.
        assert report["parent_account_gone"] == 0
        assert child.status in (Status.NOT_START, Status.SUBMITTED, Status.IN_PROGRESS)
        assert child.upstream_account_id in (None, account.pk)
        return
    assert report["parent_account_gone"] == 1
    assert child.status == Status.FAILURE
    assert child.error_code == ErrorCode.FAST_HOURS_EXHAUSTED
    assert child.fail_reason == (
        "The upstream account that made the parent task has run out of fast hours, so this "
        f"follow-up cannot run in {mode} mode; press the button again in RELAX mode."
    )


# --- operators told by e-mail ----------------------------------------------------------------


def _subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


def test_leaving_the_healthy_state_mails_the_operators_once(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first = UserFactory(is_staff=True)
    second = UserFactory(is_staff=True)
    UserFactory(is_staff=False)  # customers are never told
    UserFactory(is_staff=True, is_active=False)
    account = sandbox_account("mailed")
    with django_capture_on_commit_callbacks(execute=True):
        upstream_account_set_health(
            account=account, health=Health.BANNED, reason="The upstream says: account banned."
        )
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == sorted([first.email, second.email])
    assert "mailed" in message.subject and "banned" in message.subject
    assert "The upstream says: account banned." in message.body
    # Already out of service: a further change is not news; back to healthy is not either.
    with django_capture_on_commit_callbacks(execute=True):
        upstream_account_set_health(account=account, health=Health.NEEDS_VERIFICATION)
        upstream_account_set_health(account=account, health=Health.HEALTHY)
    assert len(mail.outbox) == 1
    # Healthy again, then out of fast hours: told again, with what still runs.
    with django_capture_on_commit_callbacks(execute=True):
        upstream_account_set_health(
            account=account, health=Health.FAST_HOURS_EXHAUSTED, reason="Credits exhausted."
        )
    assert len(mail.outbox) == 2
    assert "fast hours exhausted" in mail.outbox[1].subject
    assert "RELAX" in mail.outbox[1].body


def test_an_engine_taking_an_account_out_and_disabling_it_sends_one_mail(
    django_capture_on_commit_callbacks: Any,
) -> None:
    UserFactory(is_staff=True)
    account = _discord("bad-token")
    with django_capture_on_commit_callbacks(execute=True):
        upstream_account_take_out(
            account_id=account.pk,
            health=Health.NEEDS_VERIFICATION,
            reason="Discord rejected the account's token (401 Unauthorized).",
            disable=True,
        )
        # The gateway notices too: the same news again is no second mail.
        upstream_account_take_out(
            account_id=account.pk,
            health=Health.NEEDS_VERIFICATION,
            reason="Discord rejected the account's token (401 Unauthorized).",
            disable=True,
        )
    account.refresh_from_db()
    assert (account.health, account.is_enabled) == (Health.NEEDS_VERIFICATION, False)
    assert len(mail.outbox) == 1
    assert "disabled" in mail.outbox[0].subject and "401" in mail.outbox[0].body


def test_a_cooldown_is_told_at_most_once_an_hour(
    caller: Any,
    organization: Any,
    fund: Callable[..., None],
    clock: Any,
    sent: Any,
    scripted: Any,
    scripted_account: UpstreamAccount,
) -> None:
    fund(organization, 1_000_000)
    operator = UserFactory(is_staff=True)
    scripted.script = [TemporaryEngineError("The upstream is busy.")] * 10
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    for _ in range(COOLDOWN_AFTER_FAILURES):
        dispatch_pending()
        task_start(task_id=task.pk)
    account = UpstreamAccount.objects.get(pk=scripted_account.pk)
    assert account.health == Health.COOLING_DOWN
    assert [m.to for m in mail.outbox] == [[operator.email]]
    assert "cooling down" in mail.outbox[0].subject
    assert "The upstream is busy." in mail.outbox[0].body
    # The cooldown ends and the next failure starts another: not mailed again within the hour.
    clock.advance(seconds=COOLDOWN.total_seconds())
    assert dispatch_pending().assigned == [task.pk]
    task_start(task_id=task.pk)
    assert UpstreamAccount.objects.get(pk=account.pk).cooldown_until == clock.now + COOLDOWN
    assert len(mail.outbox) == 1


def test_the_operator_stats_count_an_exhausted_account_for_relax_only(clock: Any) -> None:
    _exhausted(sandbox_account("out-of-fast", concurrency=4))
    sandbox_account("fine", concurrency=2)
    accounts = stats_account_loads(now=clock.now)
    capacity = {
        row.mode: row.capacity for row in stats_mode_queues(now=clock.now, accounts=accounts)
    }
    assert capacity == {Mode.FAST: 2, Mode.RELAX: 6, Mode.TURBO: 2}
