"""The dashboard's remix (issue 17): the card's Remix box opens the Remix Prompt dialog; a key
form sets a key's remix default."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Organization, User
from apps.api_keys.models import ApiKey
from apps.tasks.enums import Action, Status
from apps.tasks.models import Task
from tests.billing.helpers import new_task

from .helpers import login

pytestmark = pytest.mark.django_db

V1 = "MJ::JOB::variation::1::abc"


def _grid(organization: Organization) -> Task:
    return new_task(
        organization,
        status=Status.SUCCESS,
        prompt="a red barn",
        prompt_en="a red barn",
        buttons=[
            {"custom_id": V1, "emoji": "", "label": "V1"},
            {"custom_id": "MJ::JOB::upsample::1::abc", "emoji": "", "label": "U1"},
        ],
    )


def test_the_remix_box_opens_the_remix_prompt_dialog(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    parent = _grid(organization)
    client = login(owner)
    card = client.get(f"/tasks/{parent.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert f'id="remix-{parent.pk}"' in card and f'hx-include="#remix-{parent.pk}"' in card

    response = client.post(
        f"/tasks/{parent.pk}/action/", {"custom_id": V1, "remix": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#modal-root"
    page = response.content.decode()
    assert "Remix Prompt" in page and "a red barn" in page
    waiting = Task.objects.get(parent=parent)
    assert waiting.status == Status.MODAL and waiting.params["remix"] is True

    done = client.post(
        f"/tasks/{waiting.pk}/input/", {"prompt": "a blue ocean"}, HTTP_HX_REQUEST="true"
    )
    assert done.status_code == 200
    waiting.refresh_from_db()
    assert (waiting.status, waiting.prompt_en) == (Status.NOT_START, "a blue ocean")

    plain = client.post(f"/tasks/{parent.pk}/action/", {"custom_id": V1}, HTTP_HX_REQUEST="true")
    assert plain.status_code == 200 and "HX-Retarget" in plain
    assert plain["HX-Retarget"] == "#task-feed"


def test_the_key_form_sets_the_remix_default(owner: User, organization: Organization) -> None:
    client = login(owner)
    response = client.post("/keys/new/", {"name": "remixer", "can_midjourney": "on", "remix": "on"})
    assert response.status_code == 302, response.content.decode()[:500]
    key = ApiKey.objects.get(name="remixer")
    assert key.remix is True
    assert '<span class="badge">remix</span>' in client.get("/keys/").content.decode()


def _picture(organization: Organization) -> Task:
    from apps.tasks import storage
    from tests.tasks.helpers import png_bytes

    name = storage.store_input(data=png_bytes((40, 90, 200)), ext="png")
    return new_task(
        organization,
        status=Status.SUCCESS,
        prompt="a blue barn",
        prompt_en="a blue barn",
        result={"image": name, "is_grid": False, "splits": []},
    )


def test_the_editor_edits_and_retextures_a_finished_picture(
    owner: User, organization: Organization, fund: Any
) -> None:
    from tests.tasks.helpers import png_data_url

    fund(organization, 100_000)
    source = _picture(organization)
    client = login(owner)
    card = client.get(f"/tasks/{source.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-editor="edit"' in card and 'data-editor="retexture"' in card

    form = client.get(f"/tasks/{source.pk}/editor/?kind=edit", HTTP_HX_REQUEST="true")
    assert form.status_code == 200 and form["HX-Retarget"] == "#modal-root"
    assert "data-mask-editor" in form.content.decode()

    refused = client.post(
        f"/tasks/{source.pk}/editor/",
        {"kind": "edit", "prompt": "a red door"},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 400 and "mask" in refused.content.decode()
    assert not Task.objects.filter(action="EDIT").exists()

    done = client.post(
        f"/tasks/{source.pk}/editor/",
        {"kind": "edit", "prompt": "a red door", "mask": png_data_url((255, 255, 255))},
        HTTP_HX_REQUEST="true",
    )
    assert done.status_code == 200 and done["HX-Trigger-After-Swap"] == "dashboard:close-modal"
    edit = Task.objects.get(action="EDIT")
    assert edit.prompt_en == "a red door" and edit.params["mask"] and len(edit.inputs) == 1
    assert edit.price == 14_000

    client.post(
        f"/tasks/{source.pk}/editor/",
        {"kind": "retexture", "prompt": "made of gold"},
        HTTP_HX_REQUEST="true",
    )
    assert Task.objects.get(action="RETEXTURE").prompt_en == "made of gold"


def _file(name: str, colour: tuple[int, int, int]) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.tasks.helpers import png_bytes

    return SimpleUploadedFile(name, png_bytes(colour), content_type="image/png")


def test_create_adds_the_picked_reference_images_to_the_prompt(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    client = login(owner)
    page = client.get("/create/").content.decode()
    assert 'name="sref_image"' in page and 'name="oref_image"' in page
    response = client.post(
        "/create/",
        {
            "action": "IMAGINE",
            "prompt": "a knight --v 7",
            "mode": "FAST",
            "sref_image": _file("style.png", (0, 0, 255)),
            "oref_image": _file("sword.png", (200, 200, 0)),
        },
    )
    assert response.status_code == 302, response.content.decode()[:300]
    task = Task.objects.get(organization=organization)
    assert task.prompt_en.startswith("a knight --v 7 --sref http://testserver/files/inputs/")
    assert " --oref http://testserver/files/inputs/" in task.prompt_en
    assert set(task.params["references"]) == {"sref", "oref"}

    refused = client.post(
        "/create/",
        {
            "action": "IMAGINE",
            "prompt": "a knight --v 7",
            "mode": "FAST",
            "cref_image": _file("hero.png", (0, 200, 0)),
        },
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 400
    assert "--cref works only with V6" in refused.content.decode()
    assert Task.objects.filter(organization=organization).count() == 1


def test_create_edit_with_an_uploaded_image_and_mask(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    response = login(owner).post(
        "/create/",
        {
            "action": "EDIT",
            "prompt": "a red door",
            "mode": "FAST",
            "images": [_file("house.png", (90, 90, 90))],
            "mask": _file("mask.png", (255, 255, 255)),
        },
    )
    assert response.status_code == 302, response.content.decode()[:300]
    task = Task.objects.get(organization=organization)
    assert (task.action, task.price) == (Action.EDIT, 14_000)
    assert task.params["mask"].startswith("inputs/") and len(task.inputs) == 1


def test_the_billing_page_lists_the_new_prices(owner: User, organization: Organization) -> None:
    page = login(owner).get("/billing/").content.decode()
    for label in ("Imagine (draft mode)", "Edit", "Retexture"):
        assert f">{label}</th>" in page, label
