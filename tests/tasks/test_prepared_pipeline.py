"""The worker's hand-written statements are prepared on their connection (apps/core/db.py).

A start, a poll step and the dispatch pass it runs to hand the freed slot on: each statement is
bound on the server and planned once per connection, not parsed and planned at every step
(issue 15, P2: about a third of a poll step's wall time went to client-side binding and to
PostgreSQL parsing and planning the same dozen statements again).
"""

from __future__ import annotations

import pytest
from django.db import connection

from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, poll_step
from apps.tasks.services.submit import task_submit

from .helpers import sandbox_account

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

#: A piece of each statement of a start, a poll step and its hand-on pass.
WORKER_STATEMENTS = {
    "the claim": "SET submit_claimed_at = $1",
    "the move to IN_PROGRESS": "SET status = 'IN_PROGRESS'",
    "the release of the slot": "SET slot_freed_at = $1",
    "the account's lock": 'FROM "engines_upstreamaccount" a',
    "the slots held": "SELECT upstream_account_id, count(*)",
    "the tenants' heads": "WITH RECURSIVE heads",
    "their oldest tasks": "CROSS JOIN LATERAL",
    "the lock of the chosen": "FOR UPDATE OF t SKIP LOCKED",
    "the assignment": "SET status = 'SUBMITTED'",
    "the step's read": "WHERE t.id = $1",
    "the sandbox's record": 'INSERT INTO "engines_sandboxjob"',
    "the sandbox's read": 'FROM "engines_sandboxjob" WHERE job_id = $1',
}


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def _submit(caller, prompt: str) -> Task:
    return task_submit(caller=caller, action=Action.IMAGINE, prompt=prompt).task


def _start_and_hand_on(caller, first: Task, second: Task) -> None:
    """The first task's start and its poll step, which frees the one slot and starts the
    second there (the hand-on pass)."""
    assert dispatch_pending().assigned == [first.pk]
    task_start(task_id=first.pk)
    first.refresh_from_db()
    assert first.status == Status.IN_PROGRESS
    poll_step(task_id=first.pk, token=first.poll_token)
    second.refresh_from_db()
    assert second.status == Status.IN_PROGRESS


def test_a_start_a_poll_step_and_its_hand_on_run_prepared_statements(caller, fund) -> None:
    fund(caller.organization, 10**6)
    sandbox_account(concurrency=1)
    first, second, third = (_submit(caller, f"a lighthouse number {n}") for n in range(3))
    _start_and_hand_on(caller, first, second)
    prepared = _prepared()
    missing = [
        name
        for name, piece in WORKER_STATEMENTS.items()
        if not any(piece in statement for statement in prepared)
    ]
    assert missing == []
    # The next round runs the same statements: nothing more is prepared (each was planned
    # once on this connection, and its values travel as parameters, not in its text).
    second.refresh_from_db()
    poll_step(task_id=second.pk, token=second.poll_token)
    third.refresh_from_db()
    assert third.status == Status.IN_PROGRESS
    assert sorted(_prepared()) == sorted(prepared)
