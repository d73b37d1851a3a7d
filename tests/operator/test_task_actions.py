"""Task actions driven through the admin's changelist as a staff user: effect and audit entry."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from apps.billing.models import Balance, EntryKind, LedgerEntry
from apps.engines.models import SandboxJob, UpstreamAccount
from apps.engines.services import upstream_account_set_enabled
from apps.operator.models import AuditEntry
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.lifecycle import task_fail, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.submit import task_submit
from tests.factories import TaskFactory, UserFactory
from tests.tasks.helpers import run_to_completion, sandbox_account

from .conftest import admin_url, grant

pytestmark = pytest.mark.django_db

FUNDS = 100_000
IMAGINE_FAST = 14_000


def act(client: Client, action: str, tasks: list[Task]):
    return client.post(
        admin_url("tasks_task_changelist"),
        {"action": action, "_selected_action": [t.pk for t in tasks]},
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def balance(organization) -> tuple[int, int]:
    row = Balance.objects.get(organization=organization)
    return row.available, row.held


def kinds(task: Task) -> list[str]:
    return list(LedgerEntry.objects.filter(task=task).order_by("id").values_list("kind", flat=True))


@pytest.fixture
def accounts():
    return sandbox_account("acct-a"), sandbox_account("acct-b")


@pytest.fixture
def submitted(caller, organization, fund, accounts) -> Task:
    fund(organization, FUNDS)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="a red kite").task
    dispatch_pending()  # what the dispatch message does on a worker
    task.refresh_from_db()
    assert (task.status, task.upstream_account) == (Status.SUBMITTED, accounts[0])
    return task


def test_cancel_releases_the_hold_and_is_audited(
    operator, operator_client, submitted, organization
):
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)
    response = act(operator_client, "cancel_tasks", [submitted])
    assert response.status_code == 302
    assert messages_of(response) == ["1 task(s) cancelled."]
    task = Task.objects.get(pk=submitted.pk)
    assert (task.status, task.error_code, task.fail_reason) == (
        Status.CANCEL,
        ErrorCode.CANCELLED,
        "Cancelled by an operator.",
    )
    assert kinds(task) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance(organization) == (FUNDS, 0)
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.object_type, entry.object_id) == (
        operator,
        "task.cancel",
        "tasks.task",
        submitted.pk,
    )
    account_id = submitted.upstream_account_id
    assert entry.before == {"status": "SUBMITTED", "upstream_account": account_id, "error_code": ""}
    assert entry.after == {
        "status": "CANCEL",
        "upstream_account": account_id,
        "error_code": "CANCELLED",
    }


def test_fail_and_release_fails_with_operator_code_and_is_audited(
    operator, operator_client, submitted, organization
):
    task_start(task_id=submitted.pk)  # running upstream now
    response = act(operator_client, "fail_and_release", [submitted])
    assert messages_of(response) == ["1 task(s) failed."]
    task = Task.objects.get(pk=submitted.pk)
    assert (task.status, task.error_code, task.fail_reason) == (
        Status.FAILURE,
        ErrorCode.OPERATOR_FAILED,
        "Failed by an operator.",
    )
    assert kinds(task) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert balance(organization) == (FUNDS, 0)
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.object_id, entry.before["status"], entry.after) == (
        operator,
        "task.fail",
        task.pk,
        "IN_PROGRESS",
        {
            "status": "FAILURE",
            "upstream_account": task.upstream_account_id,
            "error_code": "OPERATOR_FAILED",
        },
    )


def test_actions_on_finished_tasks_change_nothing_and_record_nothing(
    operator_client, submitted, organization
):
    done = run_to_completion(submitted.pk)
    assert done.status == Status.SUCCESS
    before = (balance(organization), kinds(done))
    for action in ("cancel_tasks", "fail_and_release"):
        act(operator_client, action, [done])
    response = act(operator_client, "retry_on_another_account", [done])
    assert messages_of(response) == [  # the session keeps the earlier actions' messages
        "0 task(s) cancelled. 1 had already finished and were left unchanged.",
        "0 task(s) failed. 1 had already finished and were left unchanged.",
        f"Task {done.pk}: The task finished with status SUCCESS; nothing to retry.",
    ]
    assert Task.objects.get(pk=done.pk).status == Status.SUCCESS
    assert (balance(organization), kinds(done)) == before
    assert AuditEntry.objects.count() == 0


def test_retry_moves_an_assigned_task_to_another_account(
    operator, operator_client, submitted, organization, accounts
):
    first, second = accounts
    response = act(operator_client, "retry_on_another_account", [submitted])
    assert messages_of(response) == [f"Task {submitted.pk} moved to acct-b and submitted again."]
    task = Task.objects.get(pk=submitted.pk)
    assert (task.status, task.upstream_account, task.submit_claimed_at, task.attempts) == (
        Status.SUBMITTED,
        second,
        None,
        1,
    )
    assert kinds(task) == [EntryKind.HOLD]  # same task, same hold
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.object_id) == (operator, "task.retry", task.pk)
    assert entry.before["upstream_account"] == first.pk
    assert entry.after["upstream_account"] == second.pk
    finished = run_to_completion(task.pk)
    assert (finished.status, finished.upstream_account) == (Status.SUCCESS, second)
    assert kinds(finished) == [EntryKind.HOLD, EntryKind.CAPTURE]
    assert balance(organization) == (FUNDS - IMAGINE_FAST, 0)


def test_retry_moves_a_running_task_and_stops_the_old_job(
    operator_client, submitted, organization, accounts
):
    first, second = accounts
    task_start(task_id=submitted.pk)
    running = Task.objects.get(pk=submitted.pk)
    assert (running.status, running.upstream_account) == (Status.IN_PROGRESS, first)
    old_token = running.poll_token
    act(operator_client, "retry_on_another_account", [running])
    task = Task.objects.get(pk=running.pk)
    assert (task.status, task.upstream_account, task.upstream_job_id, task.poll_token) == (
        Status.SUBMITTED,
        second,
        "",
        "",
    )
    assert old_token != ""
    assert SandboxJob.objects.get(task_id=task.pk).cancelled is True
    finished = run_to_completion(task.pk)
    assert (finished.status, finished.upstream_account) == (Status.SUCCESS, second)
    assert kinds(finished) == [EntryKind.HOLD, EntryKind.CAPTURE]
    assert balance(organization) == (FUNDS - IMAGINE_FAST, 0)


def test_retry_of_a_failed_task_accepts_a_new_task_on_another_account(
    operator, operator_client, submitted, organization, accounts
):
    second = accounts[1]
    task_fail(task_id=submitted.pk, reason="upstream broke", error_code=ErrorCode.UPSTREAM_ERROR)
    assert balance(organization) == (FUNDS, 0)
    response = act(operator_client, "retry_on_another_account", [submitted])
    old = Task.objects.get(pk=submitted.pk)
    new = Task.objects.exclude(pk=old.pk).get()
    assert messages_of(response) == [
        f"Task {old.pk} had failed; retried as new task {new.pk} on acct-b."
    ]
    assert (old.status, old.fail_reason) == (Status.FAILURE, "upstream broke")  # never changes
    assert (new.status, new.upstream_account, new.prompt, new.mode, new.action, new.price) == (
        Status.SUBMITTED,
        second,
        "a red kite",
        "FAST",
        Action.IMAGINE,
        IMAGINE_FAST,
    )
    assert new.engine_state == {"retry_of": old.pk}
    assert kinds(new) == [EntryKind.HOLD]
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.object_id, entry.before["task"], entry.after["task"]) == (
        "task.retry",
        new.pk,
        old.pk,
        new.pk,
    )
    assert run_to_completion(new.pk).status == Status.SUCCESS


def test_a_failed_task_is_retried_once_and_the_retry_is_named_after(
    operator_client, submitted, organization, accounts
):
    """Retrying the same failed task again (a double click, two operators) makes no second
    task and holds nothing more: the answer names the retry to follow instead."""
    task_fail(task_id=submitted.pk, reason="upstream broke", error_code=ErrorCode.UPSTREAM_ERROR)
    act(operator_client, "retry_on_another_account", [submitted])
    new = Task.objects.exclude(pk=submitted.pk).get()
    response = act(operator_client, "retry_on_another_account", [submitted])
    assert messages_of(response)[-1] == (
        f"Task {submitted.pk}: Task {submitted.pk} was retried already as task {new.pk}; "
        "retry that one if it failed too."
    )
    assert Task.objects.count() == 2
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)
    assert AuditEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_retries_of_a_failed_task_make_one_task(submitted, organization, accounts):
    import threading

    from django.db import connection

    from apps.core.errors import Conflict
    from apps.tasks.services.operator import task_retry_on_another_account

    task_fail(task_id=submitted.pk, reason="upstream broke", error_code=ErrorCode.UPSTREAM_ERROR)
    start = threading.Barrier(4)
    outcomes: list[object] = []

    def retry() -> None:
        try:
            start.wait()
            outcomes.append(task_retry_on_another_account(task_id=submitted.pk).task.pk)
        except Conflict as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    created = [o for o in outcomes if isinstance(o, str)]
    assert len(created) == 1, outcomes
    assert sum(isinstance(o, Conflict) for o in outcomes) == 3
    assert Task.objects.exclude(pk=submitted.pk).count() == 1
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)


def test_retry_without_another_free_account_changes_nothing(
    operator_client, submitted, organization, accounts
):
    first, second = accounts
    upstream_account_set_enabled(account=second, enabled=False)
    response = act(operator_client, "retry_on_another_account", [submitted])
    assert messages_of(response) == [
        f"Task {submitted.pk}: No other enabled, healthy account of the FAST pool has a free "
        f"slot now; nothing was changed. Try again shortly."
    ]
    task = Task.objects.get(pk=submitted.pk)
    assert (task.status, task.upstream_account, task.attempts) == (Status.SUBMITTED, first, 0)
    assert kinds(task) == [EntryKind.HOLD]
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)
    assert Task.objects.count() == 1
    assert AuditEntry.objects.count() == 0


def test_retry_of_a_failed_task_with_no_free_account_creates_nothing(
    operator_client, submitted, organization, accounts
):
    task_fail(task_id=submitted.pk, reason="x", error_code=ErrorCode.UPSTREAM_ERROR)
    UpstreamAccount.objects.filter(pk=accounts[1].pk).update(concurrency=1)
    blocker = TaskFactory(
        organization=organization, status=Status.IN_PROGRESS, upstream_account=accounts[1]
    )
    act(operator_client, "retry_on_another_account", [submitted])
    assert set(Task.objects.values_list("pk", flat=True)) == {submitted.pk, blocker.pk}
    assert balance(organization) == (FUNDS, 0)
    assert AuditEntry.objects.count() == 0


def test_retry_of_a_queued_task_is_refused(operator_client, caller, organization, fund):
    fund(organization, FUNDS)
    task = task_submit(caller=caller, action=Action.IMAGINE, prompt="no accounts yet").task
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    response = act(operator_client, "retry_on_another_account", [task])
    assert messages_of(response) == [
        f"Task {task.pk}: The task is NOT_START: it has no account yet, the dispatcher will "
        f"place it."
    ]
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START
    assert AuditEntry.objects.count() == 0


def test_staff_who_may_only_view_tasks_cannot_run_actions(submitted, organization):
    client = Client()
    client.force_login(grant(UserFactory(is_staff=True), "tasks.view_task"))
    page = client.get(admin_url("tasks_task_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    for action in ("cancel_tasks", "fail_and_release", "retry_on_another_account"):
        assert f'value="{action}"' not in html
        act(client, action, [submitted])
    task = Task.objects.get(pk=submitted.pk)
    assert (task.status, task.upstream_account_id) == (
        Status.SUBMITTED,
        submitted.upstream_account_id,
    )
    assert balance(organization) == (FUNDS - IMAGINE_FAST, IMAGINE_FAST)
    assert AuditEntry.objects.count() == 0


def test_staff_with_the_change_permission_can(submitted):
    client = Client()
    client.force_login(grant(UserFactory(is_staff=True), "tasks.view_task", "tasks.change_task"))
    act(client, "cancel_tasks", [submitted])
    assert Task.objects.get(pk=submitted.pk).status == Status.CANCEL
    assert AuditEntry.objects.get().action == "task.cancel"


def test_too_large_a_selection_is_refused_whole(
    monkeypatch, operator_client, caller, organization, fund, accounts
):
    monkeypatch.setattr("apps.operator.admin_tools.MAX_ACTION_ROWS", 1)
    fund(organization, FUNDS)
    tasks = [
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"p{i}").task for i in range(2)
    ]
    dispatch_pending()
    response = act(operator_client, "cancel_tasks", tasks)
    assert messages_of(response) == [
        "Select at most 1 rows for this action; narrow the list with filters or a search "
        "first. Nothing was changed."
    ]
    assert set(Task.objects.values_list("status", flat=True)) == {Status.SUBMITTED}
    assert AuditEntry.objects.count() == 0


def test_the_task_page_links_its_ledger_entries_and_audit_trail(operator_client, submitted):
    act(operator_client, "cancel_tasks", [submitted])
    html = operator_client.get(admin_url("tasks_task_change", submitted.pk)).content.decode()
    hold, release = LedgerEntry.objects.filter(task=submitted).order_by("id")
    assert f'<a href="{admin_url("billing_ledgerentry_change", hold.pk)}">Hold 14,000</a>' in html
    assert (
        f'<a href="{admin_url("billing_ledgerentry_change", release.pk)}">Release 14,000</a>'
        in html
    )
    audit = admin_url("operator_auditentry_changelist")
    assert f"{audit}?object_type=tasks.task&amp;q={submitted.pk}" in html
    listing = operator_client.get(audit, {"object_type": "tasks.task", "q": submitted.pk})
    assert "task.cancel" in listing.content.decode()


def test_the_task_page_offers_its_actions_as_buttons_that_work(operator_client, submitted):
    url = admin_url("tasks_task_change", submitted.pk)
    html = operator_client.get(url).content.decode()
    changelist = admin_url("tasks_task_changelist")
    assert (
        f'<form method="post" action="{changelist}" class="operator-actions" id="task-actions">'
        in html
    )
    for name in ("cancel_tasks", "retry_on_another_account", "fail_and_release"):
        assert f'name="action" value="{name}"' in html
    assert f'name="_selected_action" value="{submitted.pk}"' in html
    # What the cancel button posts.
    response = operator_client.post(
        changelist, {"action": "cancel_tasks", "_selected_action": submitted.pk}
    )
    assert response.status_code == 302
    assert Task.objects.get(pk=submitted.pk).status == Status.CANCEL
    finished = operator_client.get(url).content.decode()
    assert 'id="task-actions"' not in finished


def test_view_only_staff_get_no_buttons(submitted):
    client = Client()
    client.force_login(grant(UserFactory(is_staff=True), "tasks.view_task"))
    html = client.get(admin_url("tasks_task_change", submitted.pk)).content.decode()
    assert 'id="task-actions"' not in html


def test_a_follow_up_bound_to_its_parents_account_is_not_moved(
    operator_client, organization, accounts
):
    first, _ = accounts
    parent = TaskFactory(
        organization=organization,
        status=Status.SUCCESS,
        engine="mjproxy",  # its follow-ups must run where the parent ran
        upstream_account=first,
    )
    child = TaskFactory(
        organization=organization,
        action=Action.UPSCALE,
        status=Status.SUBMITTED,
        parent=parent,
        engine="mjproxy",
        upstream_account=first,
    )
    response = act(operator_client, "retry_on_another_account", [child])
    assert messages_of(response) == [
        f"Task {child.pk}: This follow-up can only run on its parent's upstream account."
    ]
    child.refresh_from_db()
    assert (child.status, child.upstream_account) == (Status.SUBMITTED, first)
    assert AuditEntry.objects.count() == 0


def test_retry_of_a_failed_task_obeys_the_tier_limit_and_the_balance(
    operator_client, submitted, caller, organization, accounts
):
    task_fail(task_id=submitted.pk, reason="x", error_code=ErrorCode.UPSTREAM_ERROR)
    UpstreamAccount.objects.filter(pk__in=[a.pk for a in accounts]).update(concurrency=10)
    for i in range(3):  # FREE allows 3 unfinished tasks
        task_submit(caller=caller, action=Action.IMAGINE, prompt=f"busy {i}")
    before = (balance(organization), Task.objects.count())
    response = act(operator_client, "retry_on_another_account", [submitted])
    assert messages_of(response) == [
        f"Task {submitted.pk}: Your Free plan allows 3 unfinished tasks at once; wait for one "
        f"to finish or upgrade your plan."
    ]
    assert (balance(organization), Task.objects.count()) == before
    assert AuditEntry.objects.count() == 0
