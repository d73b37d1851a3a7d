"""The free slots a submit's answer counts are the dispatcher's (``selectors._pool_free_slots``).

An account whose fast hours ran out takes no FAST or TURBO work from the dispatcher (FAST only
when its engine falls back to relax: ``engines.selectors.upstream_account_modes``). The queue
estimate counted such an account's idle slots as free for any mode it serves, so a FAST task
on a pool with no account able to run it was answered "started" (code 1, position 0) and then
sat queued: the estimate must ask the same question the dispatcher asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.accounts.models import MembershipTier
from apps.engines.models import Health, UpstreamAccount
from apps.tasks.enums import Action, Mode, Status
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.selectors import task_queue_estimate, task_queue_estimates
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.submit import task_submit
from tests.factories import UpstreamAccountFactory

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def premium(organization: Any, fund: Callable[..., None]) -> Any:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 10_000_000)
    return organization


def _exhausted(account: UpstreamAccount) -> UpstreamAccount:
    UpstreamAccount.objects.filter(pk=account.pk).update(
        health=Health.FAST_HOURS_EXHAUSTED, health_reason="Credits exhausted."
    )
    account.refresh_from_db()
    return account


def _submit(caller: Any, mode: str, prompt: str) -> SubmitOutcome:
    return task_submit(caller=caller, action=Action.SHORTEN, prompt=prompt, mode=mode)


def test_a_fast_task_on_an_account_out_of_fast_hours_is_queued_not_started(
    caller: Any, premium: Any
) -> None:
    account = _exhausted(sandbox_account("out-of-fast", concurrency=4))
    fast = _submit(caller, Mode.FAST, "fast")
    assert (fast.result, fast.queue_position) == (SubmitOutcome.QUEUED, 1)
    # A list's page of estimates reads the same slots.
    task = Task.objects.get(pk=fast.task.pk)
    assert task_queue_estimates(tasks=[task])[task.pk].position == 1
    assert task_queue_estimate(task=task).position == 1
    # The dispatcher agrees: nothing may take it.
    assert dispatch_pending().assigned == []
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    # RELAX work still runs there, and is answered so.
    relax = _submit(caller, Mode.RELAX, "slow")
    assert (relax.result, relax.queue_position) == (SubmitOutcome.STARTED, 0)
    assert dispatch_pending().assigned == [relax.task.pk]
    assert Task.objects.get(pk=relax.task.pk).upstream_account_id == account.pk


def test_only_the_slots_that_may_take_fast_work_are_free_for_it(caller: Any, premium: Any) -> None:
    """One healthy slot and four of an exhausted account: the first FAST task starts, the
    second waits (behind more tasks than the pool has slots for it, the estimate reads the
    free slots through the per-pool cache, ``_recent_free_slots``)."""
    healthy = sandbox_account("healthy", concurrency=1)
    _exhausted(sandbox_account("out-of-fast", concurrency=4))
    first = _submit(caller, Mode.FAST, "first")
    second = _submit(caller, Mode.FAST, "second")
    assert (first.result, first.queue_position) == (SubmitOutcome.STARTED, 0)
    assert (second.result, second.queue_position) == (SubmitOutcome.QUEUED, 1)
    assert dispatch_pending().assigned == [first.task.pk]
    assert Task.objects.get(pk=first.task.pk).upstream_account_id == healthy.pk
    assert Task.objects.get(pk=second.task.pk).status == Status.NOT_START


def test_an_account_that_falls_back_to_relax_still_counts_for_fast_but_not_turbo(
    caller: Any, premium: Any
) -> None:
    """The same rule as the dispatcher's, not "never an exhausted account": a Discord account
    configured to run FAST work in relax once its fast hours ran out still takes FAST work,
    never TURBO (paid for)."""
    lenient = _exhausted(
        UpstreamAccountFactory(
            engine="discord",
            name="lenient",
            concurrency=2,
            options={
                "token": "mfa.free-slots-test-token-0123456789",
                "guild_id": "600000000000000001",
                "channel_id": "700000000000000001",
                "fast_fallback_to_relax": True,
            },
        )
    )
    fast = _submit(caller, Mode.FAST, "fast")
    turbo = _submit(caller, Mode.TURBO, "turbo")
    assert (fast.result, fast.queue_position) == (SubmitOutcome.STARTED, 0)
    assert (turbo.result, turbo.queue_position) == (SubmitOutcome.QUEUED, 1)
    assert dispatch_pending().assigned == [fast.task.pk]
    assert Task.objects.get(pk=fast.task.pk).upstream_account_id == lenient.pk
