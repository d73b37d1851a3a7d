"""The slot cycle's bookkeeping commits do not wait for the disk; everything else still does
(apps/core/db.py, "relaxed commits"; issue 15, P2).

A relaxed commit is seen by every other connection at once, as any commit; only a crash of
PostgreSQL itself could lose it, and what these transactions write is made again then. The
setting must never leak: not into the session's later transactions, not into a transaction
somebody else opened."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from apps.engines.models import SandboxJob
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.submit import task_submit

from .helpers import sandbox_account

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_a_dispatch_pass_of_its_own_commits_without_waiting(caller):
    account = sandbox_account(duration="5")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    with connection.execute_wrapper(_setting_after(lock := [])):
        assert dispatch_pending().assigned == [task.pk]
    assert lock == ["off"]  # in force in the pass's transaction when it commits
    assert synchronous_commit() == "on"  # and gone with it
    assert Task.objects.get(pk=task.pk).upstream_account_id == account.pk


def test_a_pass_inside_another_transaction_leaves_its_commit_alone(caller):
    sandbox_account(duration="5")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    with transaction.atomic():
        with connection.execute_wrapper(_setting_after(lock := [])):
            assert dispatch_pending().assigned == [task.pk]
        assert lock == ["on"]
        assert synchronous_commit() == "on"


def test_a_slot_release_and_the_sandboxs_record_commit_without_waiting(caller, clock):
    sandbox_account(duration="1")
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    dispatch_pending()
    relaxed: list[str] = []
    with connection.execute_wrapper(_relaxed_statements(relaxed)):
        task_start(task_id=task.pk)
    # The upstream's own record: relaxed; the claim before it and the IN_PROGRESS after it
    # (what must outlive a crash once an upstream saw the job) are not.
    assert [s.split(" ")[0] for s in relaxed] == ["INSERT"]
    job = SandboxJob.objects.get(task_id=task.pk)
    assert (job.duration, job.cancelled, job.submit_calls) == (1.0, False, 1)
    assert synchronous_commit() == "on"

    task = Task.objects.get(pk=task.pk)
    assert task.status == Status.IN_PROGRESS
    clock.advance(seconds=1)
    relaxed.clear()
    with connection.execute_wrapper(_relaxed_statements(relaxed)):
        assert task_poll(task_id=task.pk, token=task.poll_token) is not None
    assert [s.split(" ")[0] for s in relaxed] == ["UPDATE"]  # the release
    assert Task.objects.get(pk=task.pk).slot_freed_at == clock.now
    assert synchronous_commit() == "on"


def _setting_after(found: list[str]) -> Any:
    """Record the setting in force right after the pass's account lock statement."""

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if "FOR UPDATE OF a SKIP LOCKED" in sql:
            with context["connection"].connection.cursor() as raw:
                raw.execute("SHOW synchronous_commit")
                found.append(raw.fetchone()[0])
        return result

    return watch


def _relaxed_statements(found: list[str]) -> Any:
    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "set_config('synchronous_commit', 'off', true)" in sql:
            found.append(sql.split("relaxed) ", 1)[1])
        return execute(sql, params, many, context)

    return watch
