"""A VIDEO's prompt is re-hosted like every other prompt: image URLs in it (``--sref``, image
prompts) are fetched through the SSRF guard, stored, and replaced by ours upstream; a URL that
cannot be used refuses the video with nothing stored."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from apps.billing.models import EntryKind, LedgerEntry
from apps.core.errors import ValidationFailed
from apps.tasks.models import Task
from apps.tasks.services.video import task_submit_video
from apps.tasks.storage import read_file

from .helpers import png_data_url
from .test_prompt_rehost import STYLE, caller, image_server, rehosting  # noqa: F401

pytestmark = pytest.mark.django_db


def _stored_inputs() -> set[str]:
    root = os.path.join(str(settings.MEDIA_ROOT), "inputs")
    return {os.path.join(folder, name) for folder, _dirs, files in os.walk(root) for name in files}


def test_a_video_prompts_urls_are_rehosted(caller, rehosting, image_server):  # noqa: F811
    style = f"{image_server}/style.png"
    prompt = f"the camera flies forward --sref {style} --v 7"
    task = task_submit_video(
        caller=caller,
        prompt=prompt,
        images=[png_data_url()],
        end_image=png_data_url((10, 200, 10)),
    ).task
    assert task.prompt == prompt  # as written, for the client
    assert image_server not in task.prompt_en
    ours = task.prompt_en.split("--sref ", 1)[1].split()[0]
    assert ours.startswith("http://testserver/files/inputs/")
    assert task.properties["finalPrompt"] == task.prompt_en
    references = task.params["references"]
    assert set(references) == {"sref", "end"}  # the end frame stays a reference too
    assert read_file(references["sref"][0]) == STYLE
    assert ours.endswith(references["sref"][0])
    assert task.params["end_frame"] is True


def test_a_video_prompt_url_that_cannot_be_used_stores_nothing(
    caller,  # noqa: F811
    rehosting,  # noqa: F811
    image_server,  # noqa: F811
):
    before = _stored_inputs()
    with pytest.raises(ValidationFailed) as caught:
        task_submit_video(
            caller=caller,
            prompt=f"the camera flies forward --sref {image_server}/notes.txt --v 7",
            images=[png_data_url()],
        )
    assert caught.value.message.startswith(f"prompt: {image_server}/notes.txt cannot be used")
    assert Task.objects.count() == 0
    assert not LedgerEntry.objects.filter(kind=EntryKind.HOLD).exists()
    assert _stored_inputs() == before
