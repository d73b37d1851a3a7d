"""A MODAL task's second step takes its locks in the ledger's documented order: the
organization's row, then the task's row (then the balance).

It locked the task's row first and the organization's row after (in ``accept``). An operator
deleting a user in the admin takes them the other way round: ``organizations_keep_owner`` locks
the user's organizations, then the deletion sets ``created_by`` to NULL on every task the user
created — a MODAL task they pressed on the dashboard among them. The two deadlocked, and
PostgreSQL aborted one: the customer's second step or the operator's deletion failed.

The other writers of a MODAL task's row lock it before the organization's only in shapes that
cannot close a cycle with the second step: a cancel, an operator's fail and the sweeper's
expiry update the row first and then take the organization's row ``FOR KEY SHARE`` (the ledger's
release), which the second step's ``FOR NO KEY UPDATE`` does not block; a MODAL task is
not counted as unfinished, so its cancel fires no update of the organization's counter. The
removal of an own account and a requeue's own check lock the organization first but touch only
queued or assigned tasks, never a MODAL one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection, transaction
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Organization, User
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from apps.tasks.services import press
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import task_press, task_submit_modal
from apps.tasks.services.submit import task_submit
from tests.factories import UserFactory
from tests.races import a_session_waits_for_a_lock

from .helpers import button_id, run_to_completion, sandbox_account

pytestmark = pytest.mark.postgres


def _modal_task(caller: Caller) -> Task:
    """A Custom Zoom press waiting for its prompt (MODAL), pressed by ``caller``."""
    grid = run_to_completion(
        task_submit(caller=caller, action=Action.IMAGINE, prompt="a red barn").task.pk
    )
    upscale = run_to_completion(
        task_press(caller=caller, parent_id=grid.pk, custom_id=button_id(grid, label="U2")).task.pk
    )
    modal = task_press(
        caller=caller, parent_id=upscale.pk, custom_id=button_id(upscale, label="Custom Zoom")
    ).task
    assert Task.objects.get(pk=modal.pk).status == Status.MODAL
    return modal


@pytest.mark.django_db(transaction=True)
def test_the_second_step_and_an_operator_deleting_its_presser_do_not_deadlock(
    organization: Organization, member: User, fund: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fund(organization, 1_000_000)
    sandbox_account()
    modal = _modal_task(Caller(organization=organization, user=member))  # on the dashboard
    assert modal.created_by_id == member.pk
    operator = UserFactory(is_staff=True, is_superuser=True)

    # The second step stops inside its transaction, after its first lock, until the operator's
    # deletion waits for a lock too.
    inside, go_on = threading.Event(), threading.Event()
    apply = press._apply

    def held_apply(task: Task, step: Any) -> None:
        inside.set()
        go_on.wait(20)
        apply(task, step)

    monkeypatch.setattr(press, "_apply", held_apply)
    errors: dict[str, BaseException] = {}

    def second_step() -> None:
        try:
            task_submit_modal(
                caller=Caller(organization=organization, user=member),
                task_id=modal.pk,
                prompt="a red barn --zoom 1.5",
            )
        except BaseException as exc:
            errors["second step"] = exc
        finally:
            connection.close()

    def delete_user() -> None:
        request = RequestFactory().post("/admin/accounts/user/")
        request.user = operator
        try:
            with transaction.atomic():  # as the admin's delete view runs it
                admin.site._registry[User].delete_model(request, User.objects.get(pk=member.pk))
        except BaseException as exc:
            errors["deletion"] = exc
        finally:
            connection.close()

    stepping = threading.Thread(target=second_step)
    stepping.start()
    assert inside.wait(20)
    deleting = threading.Thread(target=delete_user)
    deleting.start()
    deadline = time.monotonic() + 20
    while not a_session_waits_for_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    go_on.set()
    stepping.join(30)
    deleting.join(30)

    assert errors == {}
    task = Task.objects.get(pk=modal.pk)
    assert task.status == Status.NOT_START  # accepted, queued
    assert task.created_by_id is None
    assert not User.objects.filter(pk=member.pk).exists()


@pytest.mark.django_db
def test_the_second_step_locks_the_organization_before_the_task(
    organization: Organization, caller: Caller, fund: Any
) -> None:
    """Pins the order, so that no change inverts it silently: the organization's lock
    statement (taken once) comes before the first statement locking the task's row."""
    fund(organization, 1_000_000)
    sandbox_account()
    modal = _modal_task(caller)
    with CaptureQueriesContext(connection) as queries:
        task_submit_modal(caller=caller, task_id=modal.pk, prompt="a red barn --zoom 1.5")
    statements = [" ".join(query["sql"].split()) for query in queries.captured_queries]
    organization_locks = [n for n, sql in enumerate(statements) if "FOR NO KEY UPDATE OF o" in sql]
    task_locks = [
        n
        for n, sql in enumerate(statements)
        if sql.startswith(f'SELECT "{Task._meta.db_table}".') and "FOR UPDATE" in sql
    ]
    assert len(organization_locks) == 1, statements
    assert task_locks, statements
    assert organization_locks[0] < task_locks[0], statements
    assert Task.objects.get(pk=modal.pk).status == Status.NOT_START
