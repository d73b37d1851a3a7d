"""An edit's reroll on the mjproxy engine: the upstream's own reroll button of the edit's job.
The reroll keeps the edit's mask (engines that re-run the edit need it), but a remixed
reroll's form (/mj/submit/modal) takes only the prompt: the mask is not sent there."""

from __future__ import annotations

import pytest

from apps.tasks.enums import Action, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import ModalInput, task_press
from apps.tasks.services.submit import task_submit

from .helpers import data_url, mjproxy_account, png_bytes, poll, start

pytestmark = pytest.mark.django_db


def _finish(fake, task_id: str):
    task = start(task_id)
    assert task.status == Status.IN_PROGRESS, (task.fail_reason, task.error_code)
    fake.finish(task.upstream_job_id)
    done = poll(task.pk)
    assert done.status == Status.SUCCESS, (done.fail_reason, done.error_code)
    return done


def test_a_remixed_reroll_of_an_edit_sends_only_the_prompt_in_the_form(funded, live_key, fake):
    mjproxy_account(fake)
    caller = Caller(organization=funded, api_key=live_key.api_key)
    edited = _finish(
        fake,
        task_submit(
            caller=caller,
            action=Action.EDIT,
            prompt="a green meadow",
            images=[data_url(png_bytes((30, 90, 200)))],
            mask=data_url(png_bytes((255, 255, 255))),
        ).task.pk,
    )
    reroll = next(b["custom_id"] for b in edited.buttons if "reroll::" in b["custom_id"])

    pressed = task_press(
        caller=caller,
        parent_id=edited.pk,
        custom_id=reroll,
        modal=ModalInput(prompt="a yellow meadow"),
    ).task
    done = _finish(fake, pressed.pk)

    assert pressed.params["mask"] == edited.params["mask"]
    sent = fake.submits("/mj/submit/action")[-1].body
    assert sent["taskId"] == edited.upstream_job_id and sent["enableRemix"] is True
    (modal,) = fake.requests_to("/mj/submit/modal")
    assert modal.body == {"taskId": done.upstream_job_id, "prompt": "a yellow meadow"}
