"""Dispatch is a message to a worker: sent by name, after commit, through the one sender."""

from __future__ import annotations

from typing import Any

import pytest

from apps.engines.models import Health, UpstreamAccount
from apps.tasks import workers
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import kick_dispatcher
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending, task_expected_to_start
from apps.tasks.services.submit import task_submit

from .helpers import sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def funded(organization, fund):
    fund(organization, 1_000_000)


@pytest.fixture
def dispatches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Messages for ``tasks.dispatch`` as they leave (the registered task's send, recorded)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(workers.dispatch, "apply_async", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(workers.start_job, "apply_async", lambda **kwargs: None)
    return calls


def test_kick_dispatcher_sends_by_name_only_when_the_transaction_commits(
    dispatches, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        kick_dispatcher()
        assert dispatches == []  # nothing leaves before the commit
    assert dispatches == []
    for callback in callbacks:
        callback()
    assert dispatches == [{"args": ()}]


def test_accepting_a_task_sends_the_dispatch_message(
    caller, dispatches, django_capture_on_commit_callbacks
):
    sandbox_account()
    with django_capture_on_commit_callbacks(execute=True):
        task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road")
    assert dispatches == [{"args": ()}]


def test_a_submit_leaves_the_dispatch_to_the_worker(
    caller, dispatches, django_capture_on_commit_callbacks
):
    sandbox_account()
    with django_capture_on_commit_callbacks(execute=True):
        task = task_submit(caller=caller, action=Action.SHORTEN, prompt="a long road").task
    assert dispatches == [{"args": ()}]
    assert Task.objects.get(pk=task.pk).status == Status.NOT_START


def test_a_task_is_expected_to_start_while_free_slots_outnumber_the_queue_ahead(caller):
    first = task_submit(caller=caller, action=Action.SHORTEN, prompt="first road").task
    second = task_submit(caller=caller, action=Action.SHORTEN, prompt="second road").task
    assert Task.objects.get(pk=first.pk).status == Status.NOT_START  # no account yet
    assert task_expected_to_start(task=Task.objects.get(pk=first.pk)) is False

    account = sandbox_account(concurrency=1)
    assert task_expected_to_start(task=Task.objects.get(pk=first.pk)) is True
    assert task_expected_to_start(task=Task.objects.get(pk=second.pk)) is False  # one ahead

    UpstreamAccount.objects.filter(pk=account.pk).update(concurrency=2)
    assert task_expected_to_start(task=Task.objects.get(pk=second.pk)) is True

    UpstreamAccount.objects.filter(pk=account.pk).update(health=Health.BANNED)
    assert task_expected_to_start(task=Task.objects.get(pk=first.pk)) is False

    UpstreamAccount.objects.filter(pk=account.pk).update(health=Health.HEALTHY, concurrency=1)
    assert dispatch_pending().assigned == [first.pk]
    assert task_expected_to_start(task=Task.objects.get(pk=first.pk)) is True  # it has
    assert task_expected_to_start(task=Task.objects.get(pk=second.pk)) is False  # slot taken
