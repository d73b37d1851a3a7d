"""SPEC §4.3: 🔄 on a grid produces the same action as its parent. The sandbox re-runs an
EDIT (the same picture and mask) and a RETEXTURE (the same picture) for their rerolls, as it
re-runs a BLEND, rather than imagining the prompt alone."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageChops, ImageStat

from apps.tasks import storage
from apps.tasks.enums import Action, Status
from apps.tasks.services.inputs import Caller
from apps.tasks.services.press import ModalInput, task_press
from apps.tasks.services.submit import task_submit
from tests.tasks.helpers import button_id, png_data_url, run_to_completion, sandbox_account

pytestmark = pytest.mark.django_db


def _image(name: str) -> Image.Image:
    with Image.open(io.BytesIO(storage.read_file(name))) as opened:
        return opened.convert("RGB")


def _mean_difference(one: Image.Image, other: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(one, other.resize(one.size))).mean) / 3


def _halves() -> str:
    """A picture dark on its left half and bright on its right: a shape a retexture keeps."""
    image = Image.new("RGB", (128, 128), (15, 15, 15))
    image.paste((240, 240, 240), (64, 0, 128, 128))
    return _data_url(image)


def _data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def caller(organization, live_key) -> Caller:
    return Caller(organization=organization, api_key=live_key.api_key)


@pytest.fixture
def sandbox(caller, fund, organization):
    fund(organization, 50_000_000)
    return sandbox_account()


def _reroll(caller, parent, **kwargs):
    pressed = task_press(
        caller=caller, parent_id=parent.pk, custom_id=button_id(parent, part="reroll::"), **kwargs
    ).task
    return run_to_completion(pressed.pk)


def test_the_reroll_of_an_edit_repaints_the_same_picture_under_the_same_mask(caller, sandbox):
    """With an all-black mask an edit keeps the picture whatever the seed: a re-run edit is
    that picture again, an imagine of the prompt is not."""
    picture = png_data_url((20, 180, 40), size=(128, 128))
    mask = png_data_url((0, 0, 0), size=(128, 128))
    edited = run_to_completion(
        task_submit(
            caller=caller, action=Action.EDIT, prompt="a red fox", images=[picture], mask=mask
        ).task.pk
    )
    assert edited.status == Status.SUCCESS, edited.fail_reason

    again = _reroll(caller, edited)

    assert again.status == Status.SUCCESS, again.fail_reason
    assert again.params["reroll_of"] == Action.EDIT
    assert again.params["mask"] == edited.params["mask"] and again.inputs == edited.inputs
    assert again.seed != edited.seed
    assert _mean_difference(_image(edited.result["image"]), _image(again.result["image"])) < 5
    # And a reroll of that reroll is still the edit.
    third = _reroll(caller, again)
    assert (
        third.params["reroll_of"] == Action.EDIT and third.params["mask"] == edited.params["mask"]
    )
    assert _mean_difference(_image(edited.result["image"]), _image(third.result["image"])) < 5


def test_a_remixed_reroll_of_an_edit_repaints_with_the_new_prompt(caller, sandbox):
    """The masked area is repainted from the remix prompt; the rest stays the picture."""
    picture = png_data_url((20, 180, 40), size=(128, 128))
    left = Image.new("L", (128, 128), 0)
    left.paste(255, (0, 0, 64, 128))
    mask = _data_url(left)
    edited = run_to_completion(
        task_submit(
            caller=caller, action=Action.EDIT, prompt="a red fox", images=[picture], mask=mask
        ).task.pk
    )

    again = _reroll(caller, edited, modal=ModalInput(prompt="a blue lake"))

    assert again.status == Status.SUCCESS, again.fail_reason
    grid = _image(again.result["image"])
    width, height = grid.size
    # Each quadrant's right (unmasked) half is still the green picture.
    for qx, qy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        quadrant = grid.crop(
            (qx * width // 2, qy * height // 2, (qx + 1) * width // 2, (qy + 1) * height // 2)
        )
        kept = quadrant.crop((quadrant.width * 5 // 8, 0, quadrant.width, quadrant.height))
        red, green, blue = ImageStat.Stat(kept).mean
        assert green > 150 and red < 60 and blue < 80, (qx, qy, red, green, blue)


def test_the_reroll_of_a_retexture_keeps_the_pictures_shapes(caller, sandbox):
    textured = run_to_completion(
        task_submit(
            caller=caller, action=Action.RETEXTURE, prompt="red velvet", images=[_halves()]
        ).task.pk
    )
    assert textured.status == Status.SUCCESS, textured.fail_reason

    again = _reroll(caller, textured)

    assert again.status == Status.SUCCESS, again.fail_reason
    assert again.params["reroll_of"] == Action.RETEXTURE and again.inputs == textured.inputs
    grid = _image(again.result["image"]).convert("L")
    width, height = grid.size
    for qx, qy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        quadrant = grid.crop(
            (qx * width // 2, qy * height // 2, (qx + 1) * width // 2, (qy + 1) * height // 2)
        )
        half = quadrant.width // 2
        dark = ImageStat.Stat(quadrant.crop((0, 0, half, quadrant.height))).mean[0]
        bright = ImageStat.Stat(quadrant.crop((half, 0, quadrant.width, quadrant.height))).mean[0]
        # The picture's light: its dark half stays the darker one in every image of the grid.
        assert bright - dark > 60, (qx, qy, dark, bright)
