"""The editor's enlarged canvas on the server side: the canvas (the picture on a larger,
transparent canvas) is what the EDIT task edits; a canvas smaller than the picture, a canvas on
a retexture or a canvas that is no image is refused, with no task and no tokens moved."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from apps.accounts.models import Organization, User
from apps.billing.selectors import balance_get
from apps.tasks import storage
from apps.tasks.enums import Status
from apps.tasks.models import Task
from tests.billing.helpers import new_task
from tests.tasks.helpers import png_bytes, png_data_url

from .helpers import login

pytestmark = pytest.mark.django_db


def _picture(organization: Organization) -> Task:
    name = storage.store_input(data=png_bytes((40, 90, 200)), ext="png")
    return new_task(
        organization,
        status=Status.SUCCESS,
        prompt="a blue barn",
        prompt_en="a blue barn",
        result={"image": name, "is_grid": False, "splits": []},
    )


def _canvas(size: tuple[int, int], at: tuple[int, int]) -> str:
    picture = Image.open(io.BytesIO(png_bytes((40, 90, 200)))).convert("RGBA")
    board = Image.new("RGBA", size, (0, 0, 0, 0))
    board.paste(picture, at)
    out = io.BytesIO()
    board.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_an_enlarged_canvas_is_what_the_edit_edits(
    owner: User, organization: Organization, fund: Any
) -> None:
    fund(organization, 100_000)
    source = _picture(organization)
    width, height = Image.open(io.BytesIO(storage.read_file(source.result["image"]))).size
    client = login(owner)
    done = client.post(
        f"/tasks/{source.pk}/editor/",
        {
            "kind": "edit",
            "prompt": "a wide field",
            "mask": png_data_url((255, 255, 255), (width * 2, height)),
            "image": _canvas((width * 2, height), (0, 0)),
        },
        HTTP_HX_REQUEST="true",
    )
    assert done.status_code == 200, done.content.decode()
    edit = Task.objects.get(action="EDIT")
    sent = Image.open(io.BytesIO(storage.read_file(edit.inputs[0]))).convert("RGBA")
    assert sent.size == (width * 2, height)
    assert sent.getpixel((1, 1))[3] == 255 and sent.getpixel((width * 2 - 1, 1))[3] == 0


@pytest.mark.parametrize(
    ("kind", "image", "message"),
    [
        ("edit", "small", "must be at least"),
        ("retexture", "large", "Only an edit"),
        ("edit", "data:image/png;base64,bm90IGFuIGltYWdl", "images"),
    ],
)
def test_a_bad_canvas_is_refused_and_nothing_moves(
    owner: User, organization: Organization, fund: Any, kind: str, image: str, message: str
) -> None:
    fund(organization, 100_000)
    source = _picture(organization)
    width, height = Image.open(io.BytesIO(storage.read_file(source.result["image"]))).size
    canvases = {
        "small": _canvas((width - 1, height), (0, 0)),
        "large": _canvas((width * 2, height), (0, 0)),
    }
    before = balance_get(organization=organization)
    response = login(owner).post(
        f"/tasks/{source.pk}/editor/",
        {
            "kind": kind,
            "prompt": "a wide field",
            "mask": png_data_url((255, 255, 255)),
            "image": canvases.get(image, image),
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Task.objects.filter(action__in=["EDIT", "RETEXTURE"]).exists()
    after = balance_get(organization=organization)
    assert (after.available, after.held) == (before.available, before.held)
