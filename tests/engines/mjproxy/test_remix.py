"""Remix on the mjproxy engine against the fake upstream: ``enableRemix`` on the action, the
changed prompt in ``/mj/submit/modal``; an upstream that ignores ``enableRemix`` fails the task
with UNSUPPORTED_BY_UPSTREAM instead of delivering the old prompt's picture."""

from __future__ import annotations

import pytest

from apps.billing.selectors import balance_get
from apps.tasks.enums import Action, ErrorCode, Status
from apps.tasks.models import Task
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import ModalInput, task_press

from .helpers import mjproxy_account, start
from .test_flow import _button, _finish, _imagine

pytestmark = pytest.mark.django_db


def _remix_v1(funded, live_key, fake) -> tuple[Task, Task]:
    caller = Caller(organization=funded, api_key=live_key.api_key)
    grid = _finish(fake, _imagine(funded, live_key, fake, prompt="a red fox"))
    outcome = task_press(
        caller=caller,
        parent_id=grid.pk,
        custom_id=_button(grid, "V1"),
        modal=ModalInput(prompt="a blue fox in the snow"),
    )
    return grid, start(outcome.task.pk)


def test_a_remixed_variation_sends_enable_remix_then_the_prompt(funded, live_key, fake):
    mjproxy_account(fake)
    grid, remix = _remix_v1(funded, live_key, fake)
    grid_job = fake.jobs[grid.upstream_job_id]
    action = fake.submits("/mj/submit/action")[-1]
    assert action.body["enableRemix"] is True
    assert action.body["customId"] == f"MJ::JOB::variation::1::{grid_job.job_hash}"
    (modal,) = fake.requests_to("/mj/submit/modal")
    job = fake.job_for_state(f"mjgate:{remix.pk}")
    assert modal.body == {"taskId": job.id, "prompt": "a blue fox in the snow"}
    assert job.prompt == "a blue fox in the snow"
    assert remix.upstream_job_id == job.id
    done = _finish(fake, remix)
    assert (done.action, done.prompt_en) == (Action.VARIATION, "a blue fox in the snow")


def test_a_plain_variation_sends_no_enable_remix(funded, live_key, fake):
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    grid = _finish(fake, _imagine(funded, live_key, fake, prompt="a red fox"))
    task_press(caller=caller, parent_id=grid.pk, custom_id=_button(grid, "V1"))
    start(Task.objects.filter(parent=grid).get().pk)
    assert "enableRemix" not in fake.submits("/mj/submit/action")[-1].body
    assert fake.requests_to("/mj/submit/modal") == []


def test_an_upstream_without_remix_fails_the_task_clearly_and_refunds(funded, live_key, fake):
    mjproxy_account(fake)
    fake.supports_remix = False
    before = balance_get(organization=funded).available
    _grid, remix = _remix_v1(funded, live_key, fake)
    remix.refresh_from_db()
    assert remix.status == Status.FAILURE, remix.status
    assert remix.error_code == ErrorCode.UNSUPPORTED_BY_UPSTREAM
    assert "does not support remix" in remix.fail_reason
    ran = fake.job_for_state(f"mjgate:{remix.pk}")
    assert ran.status == "CANCEL"  # the plain job it started instead was stopped
    after = balance_get(organization=funded)
    # Only the imagine is paid for: the remix's hold was released.
    assert (after.available, after.held) == (before - 14000, 0)
