"""Issue 15 (P2): what a dispatch pass and a start cost in statements, whatever the batch.

A pass writes its assignments in one UPDATE and their events with one read of the tenants'
webhook endpoints, so assigning ten tasks takes as many statements as assigning one; a task's
events written right after its own UPDATE re-read nothing under a lock.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import MembershipTier
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit
from apps.webhooks.models import WebhookEndpoint, WebhookEvent
from tests.factories import OrganizationFactory

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db

#: Statements of a pass that assigns work, whatever the batch size (its transaction's pair
#: included: a savepoint pair inside the test's transaction, BEGIN and COMMIT on a worker).
PASS_STATEMENTS = 12


def _queue(make_key: Any, fund: Any, tenants: int, each: int) -> list[str]:
    tier = MembershipTier.objects.get(code="PREMIUM")
    ids = []
    for n in range(tenants):
        organization = OrganizationFactory(name=f"tenant {n}", tier=tier)
        fund(organization, 1_000_000)
        caller = Caller(organization=organization, api_key=make_key(organization).api_key)
        ids += [
            task_submit(caller=caller, action=Action.SHORTEN, prompt=f"task {n} {i}").task.pk
            for i in range(each)
        ]
    return ids


def _pass_statements() -> tuple[list[str], list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        assigned = dispatch_pending().assigned
    return assigned, [q["sql"] for q in ctx.captured_queries]


@pytest.mark.parametrize("tenants,each", [(1, 1), (5, 2)])
def test_a_pass_costs_the_same_statements_for_one_task_or_ten(
    tenants: int, each: int, make_key: Any, fund: Any, sent: list[Any]
) -> None:
    sandbox_account(concurrency=10)
    ids = _queue(make_key, fund, tenants, each)
    assigned, statements = _pass_statements()
    assert sorted(assigned) == sorted(ids)
    assert len(statements) <= PASS_STATEMENTS, "\n".join(statements)
    # The assignments are one UPDATE; no task row is re-read under a lock one by one.
    assert sum(s.startswith('UPDATE "tasks_task"') for s in statements) == 1
    assert not [s for s in statements if "FOR UPDATE" in s and 'WHERE "tasks_task"."id" =' in s]
    # Each assignment is still a start message and a task.updated event.
    assert sorted(m[1] for m in sent if m[0] == "start") == sorted(ids)
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        Status.SUBMITTED
    }


def test_assignment_events_still_reach_a_tenant_with_an_endpoint(
    make_key: Any, fund: Any, sent: list[Any]
) -> None:
    """One endpoint read for the pass: a tenant with an endpoint gets its event, one without
    gets none (the batch read must not mix them up)."""
    sandbox_account(concurrency=10)
    ids = _queue(make_key, fund, 2, 1)
    hooked = Task.objects.get(pk=ids[0]).organization
    WebhookEndpoint.objects.create(
        organization=hooked, url="https://hooks.example.com/mj", is_enabled=True
    )
    before = set(WebhookEvent.objects.values_list("pk", flat=True))
    dispatch_pending()
    new = WebhookEvent.objects.exclude(pk__in=before)
    assert set(new.values_list("task_id", flat=True)) == {ids[0]}
    assert set(new.values_list("event_type", flat=True)) == {"task.updated"}


def test_a_start_re_reads_its_task_once_and_never_under_a_lock(
    make_key: Any, fund: Any, sent: list[Any]
) -> None:
    sandbox_account(concurrency=1)
    [task_id] = _queue(make_key, fund, 1, 1)
    dispatch_pending()
    with CaptureQueriesContext(connection) as ctx:
        task_start(task_id=task_id)
    statements = [q["sql"] for q in ctx.captured_queries]
    assert Task.objects.get(pk=task_id).status == Status.IN_PROGRESS
    assert not [s for s in statements if s.startswith("SELECT") and "FOR UPDATE" in s]
    # Claim, read, the sandbox's insert, IN_PROGRESS, the account's counters, the read for the
    # event, the endpoints; and two transactions' savepoint pairs (BEGIN/COMMIT on a worker).
    assert len(statements) <= 11, "\n".join(statements)
