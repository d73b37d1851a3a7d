"""Review of 55b337a (own accounts): an own-only task may not wait for its start deadline
once no own account of its organization serves its mode."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import MembershipTier, Organization
from apps.billing.selectors import balance_get
from apps.engines.base import TemporaryEngineError
from apps.engines.own_services import own_account_update
from apps.engines.sandbox.engine import SandboxEngine
from apps.tasks.enums import Action, ErrorCode, Mode, Pool, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from tests.factories import UpstreamAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def premium(organization: Organization, fund: Any) -> Organization:
    organization.tier = MembershipTier.objects.get(code="PREMIUM")
    organization.save(update_fields=["tier"])
    fund(organization, 1_000_000)
    return organization


def test_a_task_requeued_after_its_mode_was_taken_away_is_not_stranded(
    premium, make_key, monkeypatch
):
    mine = UpstreamAccountFactory(
        name="mine", owner=premium, modes=[Mode.FAST, Mode.RELAX], concurrency=1
    )
    caller = Caller(organization=premium, api_key=make_key(premium, pool=Pool.OWN).api_key)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a fox", mode=Mode.FAST).task
    dispatch_pending()
    assert Task.objects.get(pk=task.pk).status == Status.SUBMITTED  # assigned, not started

    # The tenant takes FAST away from its only account: queued FAST own tasks fail, this one
    # (assigned) is left to run.
    own_account_update(organization=premium, account_id=mine.pk, modes=[Mode.RELAX])

    # Its start then meets a temporary upstream error: the lifecycle gives it back to the queue.
    def busy(self: Any, job: Any) -> Any:
        raise TemporaryEngineError("The upstream is busy; try again.")

    monkeypatch.setattr(SandboxEngine, "submit", busy)
    task_start(task_id=task.pk)

    after = Task.objects.get(pk=task.pk)
    # Nothing can ever run it: it must not hold its tokens until the start deadline.
    assert (after.status, after.error_code) == (Status.FAILURE, ErrorCode.ACCOUNT_UNAVAILABLE)
    assert balance_get(organization=premium).held == 0
