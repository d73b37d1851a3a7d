"""The sweeper against a task that changed after it read it (apps/tasks/scheduling.py).

A sweep reads the stuck tasks first and handles them one by one, calling upstreams on the way:
whatever it changes must still be the row it read, or it undoes someone else's live work.
"""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection

from apps.tasks import scheduling
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_start
from apps.tasks.models import Task
from tests.tasks.conftest import (  # noqa: F401 - fixtures
    caller,
    clock,
    scripted,
    scripted_account,
    sent,
)
from tests.tasks.helpers import sandbox_account

pytestmark = [pytest.mark.postgres]


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_does_not_fail_a_task_moved_after_it_read_it(
    caller,  # noqa: F811
    clock,  # noqa: F811
    sent,  # noqa: F811
    scripted,  # noqa: F811
    scripted_account,  # noqa: F811
    fund,
    monkeypatch,
):
    """``scheduling._recover_submitted`` (non-idempotent engine) fails the task it read as a
    dead submit with ``task_fail(from_statuses=(SUBMITTED,))`` and no condition on the claim
    or the lease it saw (the idempotent branch and ``_restart_poll_chain`` both have one).
    Interleaving: the sweeper reads the stale task (claim C1, lease expired); an operator moves
    it to a healthy account (``task_retry_on_another_account``: SUBMITTED, fresh lease, no
    claim; its new start may be submitting upstream already); the sweeper then fails it as
    WORKER_LOST. The operator's retry is lost, the task fails, and the new run's upstream job
    (if submitted) is orphaned."""
    from apps.tasks.services.operator import task_retry_on_another_account

    class WorkerDied(BaseException):
        pass

    fund(caller.organization, 1_000_000)
    monkeypatch.setattr(scripted, "idempotent_submit", False)
    scripted.script = [WorkerDied()]
    from apps.tasks.services.submit import task_submit

    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red fox").task
    scheduling.dispatch_pending()
    with pytest.raises(WorkerDied):
        task_start(task_id=task.pk)  # the worker dies inside the submit: claim C1 stays
    clock.advance(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.TASK_LEASE_GRACE + 1)
    healthy = sandbox_account("healthy")

    read, go = threading.Event(), threading.Event()
    recover = scheduling._recover_submitted

    def recover_after_a_pause(stale, now, report):
        read.set()  # the sweeper holds its stale read of the task
        go.wait(30)
        recover(stale, now, report)

    monkeypatch.setattr(scheduling, "_recover_submitted", recover_after_a_pause)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            scheduling.tasks_sweep()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep, name="sweeper", daemon=True)
    sweeper.start()
    assert read.wait(30)
    moved = task_retry_on_another_account(task_id=task.pk)  # the operator, meanwhile
    assert moved.account.pk == healthy.pk
    go.set()
    sweeper.join(30)
    assert not errors, errors

    task = Task.objects.get(pk=task.pk)
    # The operator's run stands: SUBMITTED on the healthy account, to be started there.
    assert task.status == Status.SUBMITTED, (task.status, task.error_code)
    assert task.upstream_account_id == healthy.pk
    assert task.error_code in ("", None)
