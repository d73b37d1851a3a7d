"""A submit that waited for another submit of its tenant reads the queue head that one left
(apps/tasks/services/acceptance.py).

A submit's answer ("started", or its place in the queue) counts the tenant's own queued tasks
ahead of it from its number and the tenant's queue head (its smallest queued number), both
read under the organization's row lock. Under READ COMMITTED a statement reads with the
snapshot it took *before* it waited for a row lock, so a head read in the statement that waits
for the lock misses the task of the submit it waited for: the second of two concurrent submits
counted itself first in its tenant's line and was told "started" for a slot the first one
takes. (Migration ``tasks.0023`` is the same class of bug in the one-statement acceptance.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from apps.tasks.enums import Action
from apps.tasks.models import Task
from apps.tasks.services import acceptance
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.inputs import ClientEcho
from apps.tasks.services.submit import task_submit
from tests.races import lock_wait_seen, on_thread
from tests.tasks.conftest import (  # noqa: F401 - fixtures
    caller,
    sent,
)

from .helpers import sandbox_account

pytestmark = [pytest.mark.postgres]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "hook",
    [None, "http://127.0.0.1:9/own-hook"],
    ids=["one-statement-acceptance", "transaction-acceptance"],
)
def test_a_submit_waiting_behind_its_tenants_submit_counts_that_task_ahead_of_it(
    caller: Any,  # noqa: F811
    sent: Any,  # noqa: F811
    fund: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    hook: str | None,
) -> None:
    """One slot, an empty queue. The first submit (the transaction path) is held inside its
    transaction, its task inserted and the organization locked; the second, of the same
    tenant, waits for that lock. Once the first commits, the second's task is number 2 behind
    queued number 1: one task ahead of it for the one slot, so it waits (position 1). With the
    head read from the lock statement's old snapshot it saw no queued task and said
    "started"."""
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    fund(caller.organization, 1_000_000)
    sandbox_account("one-slot", concurrency=1)
    inserted, go = threading.Event(), threading.Event()
    kick = acceptance.kick_dispatcher

    def kick_then_hold() -> None:
        kick()
        if threading.current_thread().name == "first":
            inserted.set()  # the first task is in, the organization locked, not committed
            go.wait(30)

    monkeypatch.setattr(acceptance, "kick_dispatcher", kick_then_hold)
    out: dict[str, Any] = {}

    def run(name: str, notify_hook: str | None) -> threading.Thread:
        echo = ClientEcho(notify_hook=notify_hook)
        prompt = f"a red fox, {name}"
        return on_thread(
            out,
            name,
            lambda: task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt, echo=echo),
        )

    first_thread = run("first", "http://127.0.0.1:9/first-hook")
    assert inserted.wait(30), out
    second_thread = run("second", hook)
    waiting = lock_wait_seen(second_thread)
    go.set()
    first_thread.join(30)
    second_thread.join(30)
    assert waiting, "the second submit did not wait for the organization lock"
    first, second = out["first"], out["second"]
    assert isinstance(first, SubmitOutcome), first
    assert isinstance(second, SubmitOutcome), second
    numbers = dict(
        Task.objects.filter(pk__in=[first.task.pk, second.task.pk]).values_list("pk", "tenant_seq")
    )
    assert (numbers[first.task.pk], numbers[second.task.pk]) == (1, 2)
    assert (first.result, first.queue_position) == (SubmitOutcome.STARTED, 0)
    assert (second.result, second.queue_position) == (SubmitOutcome.QUEUED, 1)
