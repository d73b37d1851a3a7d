"""A two-step button's second step: a refused step stores nothing (not even the mask it was
given), and a mask on a step that takes none is refused rather than dropped and charged."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from apps.tasks.enums import Action, Status
from apps.tasks.models import BannedWord, Task
from apps.translation.models import TranslatorKind
from tests.factories import TaskFactory
from tests.tasks.helpers import png_data_url
from tests.translation.conftest import fake_translators, use_translator  # noqa: F401

from .conftest import snapshot

pytestmark = pytest.mark.django_db

MASK = png_data_url((255, 255, 255))


def _stored_inputs() -> set[str]:
    root = os.path.join(str(settings.MEDIA_ROOT), "inputs")
    return {os.path.join(folder, name) for folder, _dirs, files in os.walk(root) for name in files}


def _upscale(organization) -> Task:
    return TaskFactory(organization=organization, action=Action.UPSCALE, succeeded=True)


@pytest.fixture
def banned_translation(use_translator) -> None:  # noqa: F811
    """Chinese prompts are translated; the translation of 汽车 ("cars") is banned."""
    use_translator(TranslatorKind.DEEPL)
    BannedWord.objects.create(word="cars")


# --- a banned translation refuses the step before the mask is stored ---------------------------


def test_native_modal_refused_for_its_translation_stores_no_mask(
    banned_translation, funded, live_key, client_for
):
    client = client_for(live_key)
    waiting = client.post(
        "/api/v1/tasks", {"parent": _upscale(funded).pk, "button": "VARY_REGION"}, format="json"
    )
    assert waiting.status_code == 201, waiting.content
    before, money = _stored_inputs(), snapshot(funded)
    response = client.post(
        f"/api/v1/tasks/{waiting.json()['id']}/modal",
        {"prompt": "汽车", "mask": MASK},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "banned_prompt"
    task = Task.objects.get(pk=waiting.json()["id"])
    assert (task.status, task.params.get("mask")) == (Status.MODAL, None)
    assert _stored_inputs() == before
    assert snapshot(funded) == money


def test_ttapi_inpaint_refused_for_its_translation_stores_no_mask(
    banned_translation, funded, live_key, client_for
):
    parent = _upscale(funded)
    before, money = _stored_inputs(), snapshot(funded)
    response = client_for(live_key).post(
        "/midjourney/v1/inpaint",
        {"jobId": parent.pk, "prompt": "汽车", "mask": MASK},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "cars" in response.json()["message"]
    assert _stored_inputs() == before
    assert snapshot(funded) == money


# --- a mask on a step that takes none ----------------------------------------------------------


def test_ttapi_custom_zoom_with_a_mask_is_refused(funded, live_key, client_for):
    parent = _upscale(funded)
    before, files = snapshot(funded), _stored_inputs()
    response = client_for(live_key).post(
        "/midjourney/v1/action",
        {
            "jobId": parent.pk,
            "action": "outpaint_custom",
            "prompt": "a red fox --zoom 1.5",
            "mask": MASK,
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["message"] == "This step takes no mask; only Vary (Region) does."
    assert snapshot(funded) == before
    assert _stored_inputs() == files


@pytest.mark.parametrize(
    ("button", "prompt"),
    [("CUSTOM_ZOOM", "a red fox --zoom 1.5"), ("ANIMATE_MANUAL_HIGH", "the fox runs")],
)
def test_native_modal_with_a_mask_on_a_step_without_one_is_refused(
    button, prompt, funded, live_key, client_for
):
    client = client_for(live_key)
    waiting = client.post(
        "/api/v1/tasks", {"parent": _upscale(funded).pk, "button": button}, format="json"
    )
    assert waiting.status_code == 201, waiting.content
    before = snapshot(funded)
    response = client.post(
        f"/api/v1/tasks/{waiting.json()['id']}/modal",
        {"prompt": prompt, "mask": MASK},
        format="json",
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["message"] == "This step takes no mask; only Vary (Region) does."
    assert error["details"] == {"field": "mask"}
    assert Task.objects.get(pk=waiting.json()["id"]).status == Status.MODAL
    assert snapshot(funded) == before


def test_mjproxy_modal_with_a_mask_on_custom_zoom_is_refused(funded, live_key, client_for):
    client = client_for(live_key)
    parent = _upscale(funded)
    zoom = next(b["custom_id"] for b in parent.buttons if "CustomZoom" in b["custom_id"])
    waiting = client.post(
        "/mj/submit/action", {"taskId": parent.pk, "customId": zoom}, format="json"
    ).json()
    assert waiting["code"] == 21, waiting
    before = snapshot(funded)
    response = client.post(
        "/mj/submit/modal",
        {"taskId": waiting["result"], "prompt": "a red fox --zoom 1.5", "maskBase64": MASK},
        format="json",
    ).json()
    assert response["code"] == 4, response
    assert "maskBase64" in response["description"]
    assert Task.objects.get(pk=waiting["result"]).status == Status.MODAL
    assert snapshot(funded) == before
