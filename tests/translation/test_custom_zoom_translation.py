"""Custom Zoom's second step translated like any other modal prompt.

Its prompt must carry ``--zoom``; the translation is checked by the same rules as the prompt as
written, so it is not refused for the ``--zoom`` the step requires.
"""

from __future__ import annotations

import pytest

from apps.tasks.models import Task
from apps.translation.models import TranslatorKind
from tests.tasks.helpers import run_to_completion

pytestmark = pytest.mark.django_db


def _button(task, label):
    return next(b["custom_id"] for b in task.buttons if b["label"] == label)


def _custom_zoom_waiting(client, finished_imagine) -> str:
    grid = finished_imagine()
    upscaled = run_to_completion(
        client.post(
            "/mj/submit/action", {"taskId": grid.pk, "customId": _button(grid, "U1")}, format="json"
        ).json()["result"]
    )
    waiting = client.post(
        "/mj/submit/action",
        {"taskId": upscaled.pk, "customId": _button(upscaled, "Custom Zoom")},
        format="json",
    ).json()
    assert waiting["code"] == 21, waiting
    return waiting["result"]


@pytest.mark.parametrize("kind", [TranslatorKind.DEEPL, TranslatorKind.OPENAI])
def test_a_custom_zoom_prompt_goes_up_translated(
    kind, use_translator, funded, live_key, client_for, finished_imagine
):
    use_translator(kind)
    client = client_for(live_key)
    waiting = _custom_zoom_waiting(client, finished_imagine)
    done = client.post(
        "/mj/submit/modal", {"taskId": waiting, "prompt": "一只猫 --zoom 1.5"}, format="json"
    ).json()
    assert done["code"] in (1, 22), done
    task = Task.objects.get(pk=waiting)
    assert task.prompt_en == "a cat --zoom 1.5"
    assert task.params["zoom_factor"] == 1.5
    assert task.properties["finalPrompt"] == "a cat --zoom 1.5"
    assert task.properties["translation"] == {"status": "translated", "translator": kind}
