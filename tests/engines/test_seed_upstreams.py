"""The demo seed gives a fresh install a sandbox account, once, so the first imagine works."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.accounts.demo import demo_seed
from apps.api_keys.models import ApiKey
from apps.engines.models import UpstreamAccount
from apps.tasks.enums import Action, Status
from apps.tasks.lifecycle import task_finish, task_poll, task_start
from apps.tasks.models import Task
from apps.tasks.scheduling import dispatch_pending
from apps.tasks.services.acceptance import SubmitOutcome
from apps.tasks.services.inputs import Caller
from apps.tasks.services.submit import task_submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


def test_a_fresh_database_has_no_upstream_accounts():
    assert UpstreamAccount.objects.count() == 0


def test_seed_demo_creates_the_sandbox_account_once():
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    account = UpstreamAccount.objects.get()
    assert (account.name, account.engine, account.modes, account.concurrency) == (
        "sandbox-demo",
        "sandbox",
        ["FAST", "RELAX", "TURBO"],
        3,
    )
    assert account.options == {"duration": 8}
    assert (account.is_enabled, account.is_sandbox_pool) == (True, False)


def test_the_first_imagine_after_the_seed_produces_an_image(monkeypatch):
    seed = demo_seed()
    key = ApiKey.objects.get(organization=seed.organization, is_test=False)
    caller = Caller(organization=seed.organization, api_key=key)
    outcome = task_submit(caller=caller, action=Action.IMAGINE, prompt="a lighthouse at dusk")
    assert outcome.result == SubmitOutcome.STARTED
    dispatch_pending()  # what the dispatch message does on a worker
    task_start(task_id=outcome.task.pk)
    later = timezone.now() + timedelta(seconds=8)
    monkeypatch.setattr(timezone, "now", lambda: later)  # the demo job takes 8 seconds
    token = Task.objects.get(pk=outcome.task.pk).poll_token
    task_poll(task_id=outcome.task.pk, token=token)
    task_finish(task_id=outcome.task.pk, token=token)  # the results queue stores the image
    task = Task.objects.get(pk=outcome.task.pk)
    assert task.status == Status.SUCCESS
    assert task.upstream_account.name == "sandbox-demo"
    assert task.result["is_grid"] is True
