"""A press that starts an IMAGINE from one of a result's prompts (a describe's 1️⃣-4️⃣, a
shorten's 1️⃣-5️⃣) runs that prompt, and shows it as its ``prompt`` — from the press on, and
after a second step that brought none — rather than the parent's (a describe has none, a
shorten's is the long original)."""

from __future__ import annotations

import pytest

from apps.tasks import prompt as prompts
from apps.tasks.enums import Action, Status
from apps.tasks.services.press import ModalInput, task_press, task_submit_modal
from apps.tasks.services.submit import task_submit

from .helpers import button_id, png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def sandbox(fund, organization):
    fund(organization, 50_000_000)
    return sandbox_account()


def test_an_imagine_of_a_described_prompt_shows_that_prompt(caller, sandbox, key_client):
    described = run_to_completion(
        task_submit(caller=caller, action=Action.DESCRIBE, images=[png_data_url()]).task.pk
    )
    chosen = prompts.result_prompts(described.properties)[1]

    waiting = task_press(
        caller=caller, parent_id=described.pk, custom_id=button_id(described, part="PicReader::2")
    ).task
    assert waiting.status == Status.MODAL and waiting.prompt == chosen

    task_submit_modal(caller=caller, task_id=waiting.pk)  # accepted as it is
    done = run_to_completion(waiting.pk)

    assert done.status == Status.SUCCESS, done.fail_reason
    assert done.prompt == done.prompt_en == chosen
    fetched = key_client.get(f"/mj/task/{done.pk}/fetch").json()
    assert fetched["prompt"] == fetched["promptEn"] == chosen


def test_an_imagine_of_a_shortened_prompt_shows_it_not_the_long_original(caller, sandbox):
    long = "a very red fox in the deep white snow under a pale winter sky"
    shortened = run_to_completion(
        task_submit(caller=caller, action=Action.SHORTEN, prompt=long).task.pk
    )
    chosen = prompts.result_prompts(shortened.properties)[2]
    assert chosen != long

    pressed = task_press(
        caller=caller,
        parent_id=shortened.pk,
        custom_id=button_id(shortened, part="PromptAnalyzer::3"),
        modal=ModalInput(),  # in one go, as TTAPI's shorten3 does
    ).task

    assert pressed.status == Status.NOT_START
    assert pressed.prompt == pressed.prompt_en == chosen
